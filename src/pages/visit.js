// The visitor's page (see visit.html). A school publishes /visit?tenant=<id>: the visitor
// fills in the form the tenant configured and asks to visit a member. The answer's pass
// becomes the page's address fragment (/visit#<pass>) and is kept in this browser, so the
// page shows where the request stands, and once approved the QR code for the gate. The
// pass only ever travels in POST bodies.
"use strict";
(async () => {
  const $ = (id) => document.getElementById(id);
  const KEY = "onecard.visit.pass";
  const STATES = {
    pending: ["Waiting for your host", "Your host has been asked. This page updates by itself."],
    approved: ["Approved", "Show this code at the gate."],
    rejected: ["Not approved", "You may ask again, for another time."],
    cancelled: ["Cancelled", ""],
  };

  async function post(path, body) {
    const res = await fetch(`/api/v1${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw Object.assign(new Error(json.detail || res.statusText), { problem: json });
    return json;
  }

  const local = (t) => new Date(t).toLocaleString([], {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });

  async function showPass(pass) {
    let view;
    try {
      view = await post("/visitors/pass", { pass });
    } catch (e) {
      localStorage.removeItem(KEY);
      $("pass").classList.remove("hidden");
      $("state").textContent = "Unknown pass";
      $("note").textContent = e.message;
      return;
    }
    const r = view.request;
    const box = $("pass");
    box.classList.remove("hidden");
    box.dataset.status = r.status;
    box.className = `receipt ${r.status === "approved" ? "ok" : r.status === "pending" ? "" : "bad"}`;
    const [title, note] = STATES[r.status] || [r.status, ""];
    $("state").textContent = r.entered_at ? "Welcome" : title;
    $("whom").textContent = `${r.name} → ${r.host_name || "your host"}`;
    $("when").textContent = `${local(r.starts_at)} – ${local(r.ends_at)}${r.plate ? ` · ${r.plate}` : ""}`;
    $("why").textContent = r.reason || "";
    $("note").textContent = r.entered_at ? `You came in at ${local(r.entered_at)}.` : note;
    $("qr").classList.toggle("hidden", !view.svg || !!r.entered_at);
    $("qr").innerHTML = view.svg || "";
    const cancellable = (r.status === "pending" || r.status === "approved") && !r.entered_at;
    $("cancel").classList.toggle("hidden", !cancellable);
    if (r.status === "pending") setTimeout(() => showPass(pass), 15_000);
  }

  $("cancel").addEventListener("click", async () => {
    if (!confirm("Cancel this visit?")) return;
    const pass = localStorage.getItem(KEY);
    try {
      await post("/visitors/pass/cancel", { pass });
    } catch (e) {
      alert(e.message);
    }
    showPass(pass);
  });

  // A pass in the address (the link from the answer) is kept, then leaves the address bar.
  const fragment = location.hash.slice(1);
  if (fragment) {
    localStorage.setItem(KEY, fragment);
    history.replaceState(null, "", location.pathname + location.search);
  }
  // The public link (?tenant=) always offers the form, for another visit; without it the
  // page shows the pass this browser keeps.
  const tenant = new URLSearchParams(location.search).get("tenant");
  const kept = localStorage.getItem(KEY);
  if (kept && (fragment || !tenant)) {
    await showPass(kept);
    return;
  }
  if (!tenant) {
    $("pass").classList.remove("hidden");
    $("state").textContent = "Open the visitor link your host sent you.";
    return;
  }

  let shown;
  try {
    const res = await fetch(`/api/v1/visitors/forms/${encodeURIComponent(tenant)}`);
    shown = await res.json();
    if (!res.ok) throw new Error(shown.detail || res.statusText);
  } catch (e) {
    $("pass").classList.remove("hidden");
    $("state").textContent = "No such organisation";
    return;
  }
  $("title").textContent = shown.tenant_name;
  $("who").textContent = "visitor";
  const form = shown.form;
  const rules = { ...form, id_number: form.real_name ? "required" : "off" };
  for (const [field, rule] of Object.entries(rules)) {
    for (const el of document.querySelectorAll(`[data-field="${field}"]`)) {
      el.classList.toggle("hidden", rule === "off");
      if (el.tagName === "LABEL" && rule === "optional") el.textContent += " (optional)";
    }
  }
  const ask = $("ask");
  ask.classList.remove("hidden");
  // Tomorrow at nine for two hours, in this browser's time, as a start.
  const start = new Date(Date.now() + 24 * 3600 * 1000);
  start.setHours(9, 0, 0, 0);
  const asInput = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000)
    .toISOString().slice(0, 16);
  $("starts").value = asInput(start);
  $("ends").value = asInput(new Date(start.getTime() + 2 * 3600 * 1000));

  ask.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("problem").textContent = "";
    const value = (id) => ($(id).classList.contains("hidden") ? null : ($(id).value.trim() || null));
    const when = (id) => ($(id).value ? new Date($(id).value).toISOString() : null);
    const body = {
      tenant_id: tenant,
      name: value("name") || "",
      host_name: value("host_name") || "",
      host_number: value("host_number") || "",
      phone: value("phone"),
      company: value("company"),
      purpose: value("purpose"),
      plate: value("plate"),
      id_number: value("id_number"),
      starts_at: when("starts"),
      ends_at: when("ends"),
    };
    $("send").disabled = true;
    try {
      const made = await post("/visitors/requests", body);
      localStorage.setItem(KEY, made.pass);
      // From now on this page is the pass (a reload shows it, not the form again).
      history.replaceState(null, "", location.pathname);
      ask.classList.add("hidden");
      await showPass(made.pass);
    } catch (e) {
      const errors = (e.problem && e.problem.errors) || [];
      $("problem").textContent = errors.length
        ? errors.map((x) => `${x.field}: ${x.message}`).join("; ")
        : e.message;
    } finally {
      $("send").disabled = false;
    }
  });
})();
