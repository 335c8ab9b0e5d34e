// The verifying phone (see verify.html): a shuttle bus's binding link opens
// /verify#<binding>, a device's fixed scanner's /verify?app=maintenance#<binding>; the
// page binds this phone or scanner and keeps its verifier token. Then each personal code,
// read by the camera (where the browser can decode QR codes) or typed by a scanner that
// acts as a keyboard, is verified: a big green "Boarded" (or "Recorded") with who, or red
// with why, to read at a glance.
"use strict";
(async () => {
  const $ = (id) => document.getElementById(id);
  const APPS = {
    shuttle: { page: "verify", bind: "/shuttle/bind", self: "/shuttle/verifier",
      scan: "/shuttle/rides", field: "code", title: "OneCard shuttle", done: "Boarded",
      again: "Already boarded", label: "Shuttle phone token" },
    maintenance: { page: "verify-maintenance", bind: "/maintenance/bind",
      self: "/maintenance/scanner", scan: "/maintenance/records", field: "code",
      title: "OneCard maintenance", done: "Recorded", again: "Already recorded",
      label: "Scanner token" },
    // The gate's staff sign in with their own admin token (the visitors app's): no link.
    visitors: { page: "verify-visitors", bind: null, self: "/admins/me",
      scan: "/visitors/entries", field: "pass", title: "OneCard visitor gate",
      done: "Let in", again: "Already in", label: "Staff token" },
  };
  const which = new URLSearchParams(location.search).get("app");
  const APP = APPS[which] || APPS.shuttle;
  const MAINTENANCE = which === "maintenance";
  const VISITORS = which === "visitors";
  const PAGE = APP.page;
  document.title = APP.title;
  document.querySelector("header h1").textContent = APP.title;

  // A binding link's fragment is the bare binding token (not `token=`).
  const fragment = location.hash.slice(1);
  if (APP.bind && fragment && !fragment.includes("=")) {
    history.replaceState(null, "", location.pathname + location.search);
    try {
      const res = await fetch(`/api/v1${APP.bind}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ binding_token: fragment }),
      });
      const body = await res.json();
      if (!res.ok) throw new Error(body.detail || res.statusText);
      localStorage.setItem(`onecard.${PAGE}.token`, body.token);
    } catch (e) {
      OneCard.signIn(PAGE, `${APP.label} (binding failed: ${e.message})`);
      return;
    }
  }

  const session = await OneCard.signedIn(PAGE, APP.label, APP.self);
  if (!session) return;
  const { tok, data: here } = session;
  // What this phone verifies: a bus on its route, a device of its type at its place, or
  // visitors' passes at a gate.
  if (VISITORS) {
    $("who").textContent = "Visitor gate";
  } else {
    const [what, group, place] = MAINTENANCE
      ? [here.device, here.device_type, here.device.location]
      : [here.bus, here.route, ""];
    $("who").textContent = what.name;
    $("route").textContent = [place, group.name].filter(Boolean).join(" · ")
      + (group.identities.length ? ` · for ${group.identities.join(", ")}` : "");
  }
  $("main").classList.remove("hidden");

  const REFUSED = {
    personal_code_invalid: "Not a personal code",
    personal_code_expired: "Code expired: refresh it",
    personal_code_used: "Code already used",
    card_inactive: "Card not active",
    not_on_route: "Not for this route",
    not_a_technician: "Not a technician for this",
    outside_window: "Outside the allowed hours",
    pass_invalid: "Not a visitor's pass",
    visit_not_approved: "Visit not approved",
    outside_visit: "Not the time of the visit",
  };
  const day = new Date().toDateString();
  const countKey = `onecard.${PAGE}.boarded.${day}`;
  let boarded = Number(localStorage.getItem(countKey) || 0);
  $("boarded").textContent = boarded;

  function show(ok, state, title, rider, reason) {
    const box = $("result");
    box.className = `receipt ${ok ? "ok" : "bad"}`;
    box.dataset.state = state;
    $("state").textContent = title;
    $("rider").textContent = rider || "";
    $("reason").textContent = reason || "";
    $("when").textContent = new Date().toLocaleTimeString();
  }

  let busy = false;
  async function verify(code) {
    if (busy || !code) return;
    busy = true;
    try {
      const res = await fetch(`/api/v1${APP.scan}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${tok}`, "Content-Type": "application/json" },
        body: JSON.stringify({ [APP.field]: code }),
      });
      const body = await res.json();
      if (res.status === 401) {
        OneCard.forget(PAGE);
        return;
      }
      if (res.ok) {
        const r = VISITORS ? body.request : body;
        const who = VISITORS
          ? `${r.name} → ${r.host_name || "host"}${r.plate ? ` · ${r.plate}` : ""}`
          : `${r.name || ""} ${r.number ? `· ${r.number}` : ""}`.trim();
        if (res.status === 201) {
          boarded += 1;
          localStorage.setItem(countKey, String(boarded));
          $("boarded").textContent = boarded;
          show(true, "boarded", APP.done, who);
        } else {
          show(true, "repeat", APP.again, who);
        }
      } else {
        show(false, body.code || "error", REFUSED[body.code] || "Refused", "", body.detail);
      }
    } catch (e) {
      show(false, "error", "No answer", "", e.message);
    } finally {
      busy = false;
      $("code").value = "";
      $("code").focus();
    }
  }

  $("scan").addEventListener("submit", (ev) => {
    ev.preventDefault();
    verify($("code").value.trim());
  });
  $("code").focus();

  // The camera, where the browser decodes QR codes itself (Chrome on Android does).
  if ("BarcodeDetector" in window && navigator.mediaDevices) {
    const button = $("use-camera");
    button.classList.remove("hidden");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const detector = new BarcodeDetector({ formats: ["qr_code"] });
        const video = $("camera");
        video.srcObject = await navigator.mediaDevices.getUserMedia({
          video: { facingMode: "environment" },
        });
        video.classList.remove("hidden");
        await video.play();
        let last = "";
        let lastAt = 0;
        setInterval(async () => {
          const found = await detector.detect(video).catch(() => []);
          const code = found.length ? found[0].rawValue : "";
          // The same code held in front of the camera is verified once every 3 s at most.
          if (code && (code !== last || Date.now() - lastAt > 3_000)) {
            last = code;
            lastAt = Date.now();
            verify(code);
          }
        }, 250);
      } catch (e) {
        show(false, "error", "No camera", "", e.message);
        button.disabled = false;
      }
    });
  }
})();
