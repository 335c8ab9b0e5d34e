// The card's launcher (see launch.html): an app's own link, /launch/<app id>. With the
// card signed in on this phone (the /me page's token) it asks for a one-time ticket and
// goes on to the app's page with it; the app's server learns who opened it from the
// ticket. The card's token never leaves this server's pages.
"use strict";
(async () => {
  const app = location.pathname.split("/").pop();
  const session = await OneCard.signedIn("me", "Card token", "/me");
  if (!session) return;
  document.getElementById("who").textContent = session.data.name;
  const state = document.getElementById("state");
  try {
    const launch = await OneCard.api(session.tok, "POST", "/me/app-launches", { app_id: app });
    state.textContent = `Opening ${launch.app_name}…`;
    location.replace(launch.redirect_url);
  } catch (e) {
    state.textContent = e.message;
    state.dataset.problem = (e.problem && e.problem.code) || "error";
  }
})();
