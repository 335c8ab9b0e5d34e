// The shuttle phone (see verify.html): a bus's binding link opens /verify#<binding>; the
// page binds this phone to the bus and keeps its verifier token. Then each rider's
// personal code, read by the camera (where the browser can decode QR codes) or typed by a
// scanner that acts as a keyboard, is verified: a big green "Boarded" with who, or red
// with why, for the driver to read at a glance.
"use strict";
(async () => {
  const $ = (id) => document.getElementById(id);
  const PAGE = "verify";

  // A binding link's fragment is the bare binding token (not `token=`).
  const fragment = location.hash.slice(1);
  if (fragment && !fragment.includes("=")) {
    history.replaceState(null, "", location.pathname);
    try {
      const res = await fetch("/api/v1/shuttle/bind", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ binding_token: fragment }),
      });
      const body = await res.json();
      if (!res.ok) throw new Error(body.detail || res.statusText);
      localStorage.setItem(`onecard.${PAGE}.token`, body.token);
    } catch (e) {
      OneCard.signIn(PAGE, `Shuttle phone token (binding failed: ${e.message})`);
      return;
    }
  }

  const session = await OneCard.signedIn(PAGE, "Shuttle phone token", "/shuttle/verifier");
  if (!session) return;
  const { tok, data: here } = session;
  $("who").textContent = here.bus.name;
  $("route").textContent = here.route.identities.length
    ? `${here.route.name} · for ${here.route.identities.join(", ")}`
    : here.route.name;
  $("main").classList.remove("hidden");

  const REFUSED = {
    personal_code_invalid: "Not a rider's code",
    personal_code_expired: "Code expired: refresh it",
    personal_code_used: "Code already used",
    card_inactive: "Card not active",
    not_on_route: "Not for this route",
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
      const res = await fetch("/api/v1/shuttle/rides", {
        method: "POST",
        headers: { Authorization: `Bearer ${tok}`, "Content-Type": "application/json" },
        body: JSON.stringify({ code }),
      });
      const body = await res.json();
      if (res.status === 401) {
        OneCard.forget(PAGE);
        return;
      }
      if (res.ok) {
        const who = `${body.name || ""} ${body.number ? `· ${body.number}` : ""}`.trim();
        if (res.status === 201) {
          boarded += 1;
          localStorage.setItem(countKey, String(boarded));
          $("boarded").textContent = boarded;
          show(true, "boarded", "Boarded", who);
        } else {
          show(true, "repeat", "Already boarded", who);
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
