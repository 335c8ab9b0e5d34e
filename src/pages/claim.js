// The claim page (see claim.html). A tenant publishes /claim?tenant=<id> (every card a
// person may claim; at the tenant's own address /claim alone) or /claim?tenant=<id>&card=<id>
// (one card's own link and QR); its official account adds a claim ticket in the fragment
// (#ticket=…), which this page keeps for the claim. The person picks a card and who they
// are, fills in what that identity's method asks, and claims: the card is activated and
// its token kept where /me finds it.
"use strict";
(async () => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  // At an organisation's own address /claim alone is its unified claim page.
  const brand = await window.onecardBrand;
  const tenant = params.get("tenant") || (brand && brand.tenant_id);
  const only = params.get("card");
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("ticket")) {
    sessionStorage.setItem("onecard.claim.ticket", fragment.get("ticket"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const ticket = sessionStorage.getItem("onecard.claim.ticket");
  const SUBTITLES = {
    campus_card: "Campus card", alumni_card: "Alumni card", student_card: "Student card",
    teacher_card: "Teacher card", staff_card: "Staff card", temporary_card: "Temporary card",
    visitor_card: "Visitor card", employee_card: "Employee card",
  };

  async function call(method, path, body) {
    const res = await fetch(`/api/v1${path}`, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw Object.assign(new Error(json.detail || res.statusText), { problem: json });
    return json;
  }
  const say = (e) => {
    const errors = (e.problem && e.problem.errors) || [];
    $("problem").textContent = errors.length
      ? errors.map((x) => `${x.field}: ${x.message}`).join("; ")
      : e.message;
  };

  if (!tenant) {
    $("cards").textContent = "Open the claim link your organisation published.";
    return;
  }
  let offer;
  try {
    offer = await call("GET", `/claim/${encodeURIComponent(tenant)}`);
  } catch (e) {
    $("cards").textContent = "No such organisation.";
    return;
  }
  $("title").textContent = offer.tenant_name;
  const cards = offer.cards.filter((c) => !only || c.id === only);
  if (!cards.length) {
    $("cards").textContent = "No card can be claimed here now.";
    return;
  }
  let card = null;

  function chooseIdentity() {
    const identity = card.identity_types.find((t) => t.id === $("identity").value);
    const fields = new Set(identity ? identity.fields : []);
    for (const el of document.querySelectorAll("[data-field]")) {
      el.classList.toggle("hidden", !fields.has(el.dataset.field));
    }
  }

  function choose(c) {
    card = c;
    for (const tile of document.querySelectorAll(".card-tile")) {
      tile.classList.toggle("on", tile.dataset.id === c.id);
    }
    $("chosen").textContent = `${c.title} · ${SUBTITLES[c.subtitle] || c.subtitle}`;
    const select = $("identity");
    select.innerHTML = "";
    for (const t of c.identity_types) select.add(new Option(t.name, t.id));
    $("form").classList.remove("hidden");
    $("problem").textContent = c.claim_mode !== "open_link" && !ticket
      ? "This card is claimed from the organisation's official account: open the link there."
      : "";
    chooseIdentity();
  }

  for (const c of cards) {
    const tile = document.createElement("button");
    tile.type = "button";
    tile.className = "card-tile";
    tile.dataset.id = c.id;
    if (c.cover_url) {
      const img = document.createElement("img");
      // From the address this page is at, whichever the organisation's links now carry
      // (the pages load nothing from elsewhere).
      img.src = new URL(c.cover_url, location.href).pathname;
      img.alt = "";
      tile.append(img);
    }
    const label = document.createElement("span");
    label.textContent = `${c.title} · ${SUBTITLES[c.subtitle] || c.subtitle}`;
    tile.append(label);
    tile.addEventListener("click", () => choose(c));
    $("cards").append(tile);
  }
  if (cards.length === 1) choose(cards[0]);
  $("identity").addEventListener("change", chooseIdentity);

  $("send-code").addEventListener("click", async () => {
    $("problem").textContent = "";
    try {
      await call("POST", `/claim/${encodeURIComponent(tenant)}/phone-codes`, {
        identity_type_id: $("identity").value,
        phone: $("phone").value.trim(),
      });
      $("sent").textContent = "If this phone may claim, a code is on its way.";
    } catch (e) {
      say(e);
    }
  });

  $("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("problem").textContent = "";
    const value = (id) => ($(id).classList.contains("hidden") ? null : ($(id).value.trim() || null));
    const body = {
      identity_type_id: $("identity").value,
      ticket,
      name: value("name"),
      number: value("number"),
      id_number: value("id_number"),
      phone: value("phone"),
      phone_code: value("phone_code"),
    };
    $("claim").disabled = true;
    try {
      const done = await call("POST", `/claim/${encodeURIComponent(tenant)}/cards/${card.id}`, body);
      localStorage.setItem("onecard.me.token", done.token);
      sessionStorage.removeItem("onecard.claim.ticket");
      $("form").classList.add("hidden");
      $("cards").classList.add("hidden");
      $("done").classList.remove("hidden");
      $("holder").textContent = `${done.card.title} · ${done.user.name} (${done.user.number})`;
    } catch (e) {
      say(e);
    } finally {
      $("claim").disabled = false;
    }
  });
})();
