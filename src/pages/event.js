// The event screen (see event.html): /event-screen?event=<id>#token=<admin token>. Shows
// the event's QR code and code for people to scan, how many have checked in, and each
// check-in and refusal as it happens.
"use strict";
(async () => {
  const eventId = new URLSearchParams(location.search).get("event") || "";
  const session = await OneCard.signedIn("event", "Admin token", `/events/${encodeURIComponent(eventId)}`);
  if (!session) return;
  const { tok, data: event } = session;
  const $ = (id) => document.getElementById(id);
  $("main").classList.remove("hidden");
  $("who").textContent = event.name;

  const REASONS = {
    not_a_member: "not a member of this organisation",
    not_designated: "not on the list",
    outside_geofence: "too far from the venue",
    event_not_open: "check-in is not open",
  };
  const time = (at) => new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

  async function door(ev) {
    $("code").textContent = `${ev.code.slice(0, 4)}-${ev.code.slice(4)}`;
    $("window").textContent = `open ${time(new Date(Date.parse(ev.starts_at) - ev.early_minutes * 60000))} – ${time(ev.ends_at)}`;
    $("count").textContent = ev.checked_in;
    $("of").textContent = ev.designated ? ev.attendees : "anyone";
    $("of-label").textContent = ev.designated ? "Designated" : "Open to";
    const res = await fetch(`/api/v1/events/${encodeURIComponent(ev.id)}/qr`, {
      headers: { Authorization: `Bearer ${tok}` },
    });
    // The SVG is the server's own drawing of the code; nothing in it comes from users.
    if (res.ok) $("qr").innerHTML = await res.text();
  }

  function line(cls, text) {
    const li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    const feed = $("feed");
    feed.prepend(li);
    while (feed.children.length > 50) feed.lastChild.remove();
  }

  await door(event);
  new OneCard.Live(tok, [`event:${event.id}`], {
    onEvent: (e) => {
      const d = e.data;
      if (e.type === "checkin.confirmed") {
        $("count").textContent = Number($("count").textContent) + 1;
        line("ok", `${time(d.at)}  ✓ ${d.name} · ${d.number}`);
      } else if (e.type === "checkin.failed") {
        const who = d.name ? `${d.name} · ${d.number}` : "someone from elsewhere";
        line("bad", `${time(d.at)}  ✗ ${who}: ${REASONS[d.reason] || d.reason}`);
      }
    },
    onStatus: OneCard.status,
    // Events were missed for good: count again from the server.
    onExpired: async () => door(await OneCard.api(tok, "GET", `/events/${encodeURIComponent(event.id)}`)),
  });
})();
