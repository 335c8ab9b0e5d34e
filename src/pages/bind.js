// The admin binding page (see bind.html). A super admin names a user as admin and hands
// them /bind#<binding token> (as a link or its QR code); they open it themselves and bind.
// The token leaves the address bar at once (kept for this tab only). The card kept on this
// phone by /me, if any, goes with the request, so that a link opened with someone else's
// card is refused. The admin token is kept where /dashboard finds it.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "onecard.bind.token";
  if (location.hash.length > 1) {
    sessionStorage.setItem(KEY, location.hash.slice(1));
    history.replaceState(null, "", location.pathname);
  }
  const binding = sessionStorage.getItem(KEY);
  if (!binding) {
    $("problem").textContent = "Open the binding link you were given.";
    $("bind").disabled = true;
    return;
  }
  const WHY = {
    binding_used_or_expired: "This link was already used or has expired: ask for a new one.",
    binding_not_yours:
      "This link names someone else: the person named opens it on their own phone.",
    not_found: "This is not a binding link: check that it was copied whole.",
  };

  async function call(method, path, token, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) throw Object.assign(new Error(json.detail || res.statusText), { problem: json });
    return json;
  }

  $("bind").addEventListener("click", async () => {
    $("bind").disabled = true;
    $("problem").textContent = "";
    try {
      const card = localStorage.getItem("onecard.me.token");
      const bound = await call("POST", "/admins/bind", card, { binding_token: binding });
      sessionStorage.removeItem(KEY);
      localStorage.setItem("onecard.dashboard.token", bound.token);
      $("token").textContent = bound.token;
      try {
        const [me, tenant] = await Promise.all([
          call("GET", "/admins/me", bound.token),
          call("GET", "/tenant", bound.token),
        ]);
        const role = me.role === "super_admin" ? "Super admin" : "Admin";
        $("who").textContent = `${role} of ${tenant.name}`;
      } catch (_) {
        $("who").textContent = "Admin";
      }
      $("ask").classList.add("hidden");
      $("done").classList.remove("hidden");
    } catch (e) {
      const code = e.problem && e.problem.code;
      $("problem").textContent = WHY[code] || e.message;
      $("bind").disabled = code === "binding_used_or_expired" || code === "not_found";
    }
  });
})();
