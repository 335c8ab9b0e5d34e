// OneCard live pages: token handling, REST calls and a websocket client that resumes.
// Plain browser JavaScript, no dependencies, served by the server itself.
"use strict";

const OneCard = (() => {
  // A token comes in the URL fragment (never sent to the server, never logged), is kept
  // in this browser's localStorage under the page's name, and can be forgotten.
  function token(page) {
    const key = `onecard.${page}.token`;
    const hash = new URLSearchParams(location.hash.slice(1));
    const fromHash = hash.get("token");
    if (fromHash) {
      localStorage.setItem(key, fromHash);
      history.replaceState(null, "", location.pathname + location.search);
      return fromHash;
    }
    return localStorage.getItem(key);
  }

  function forget(page) {
    localStorage.removeItem(`onecard.${page}.token`);
    location.reload();
  }

  // Shows the sign-in form; on submit stores the token and reloads.
  function signIn(page, label) {
    const form = document.getElementById("signin");
    form.classList.remove("hidden");
    form.querySelector("label").textContent = label;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = form.querySelector("input").value.trim();
      if (value) {
        localStorage.setItem(`onecard.${page}.token`, value);
        location.reload();
      }
    });
  }

  // The page's token and its first GET of `path`; without a token, or when the server
  // refuses it, shows the sign-in form (labelled `label`) and answers null.
  async function signedIn(page, label, path) {
    const tok = token(page);
    if (!tok) {
      signIn(page, label);
      return null;
    }
    try {
      return { tok, data: await api(tok, "GET", path) };
    } catch (e) {
      signIn(page, `${label} (${e.message})`);
      return null;
    }
  }

  // A tenant group's admin opens a member's page with `?member=<tenant id>`: every call
  // and the websocket then act in that member (the OneCard-Tenant header, `&tenant=`).
  const member = new URLSearchParams(location.search).get("member");

  async function api(tok, method, path, body, headers = {}) {
    const res = await fetch(`/api/v1${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${tok}`,
        ...(member ? { "OneCard-Tenant": member } : {}),
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const err = new Error((json && json.detail) || res.statusText);
      err.status = res.status;
      err.problem = json;
      throw err;
    }
    return json;
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "k" + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  // Text for innerHTML: names come from users and admins.
  function esc(text) {
    return String(text ?? "").replace(/[&<>"']/g, (c) =>
      ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  // ¥12.34 from fen.
  function yuan(fen) {
    const sign = fen < 0 ? "-" : "";
    const abs = Math.abs(fen);
    return `${sign}¥${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
  }

  const REASONS = {
    code_invalid: "Code not recognised",
    code_expired: "Code expired — refresh it",
    code_reused: "Code already used — refresh it",
    frozen: "Card frozen",
    arrears: "Unpaid arrears — repay first",
    over_limit: "Over the single-payment limit",
    insufficient_funds: "Not enough balance",
    card_inactive: "Card inactive",
  };

  // A websocket that subscribes to `topics`, remembers each topic's last seq and epoch,
  // and on reconnect resumes from them. `onExpired(topic)` lets the page refetch state
  // over REST before it subscribes afresh.
  class Live {
    constructor(tok, topics, { onEvent, onStatus, onExpired } = {}) {
      this.tok = tok;
      this.topics = topics;
      this.onEvent = onEvent || (() => {});
      this.onStatus = onStatus || (() => {});
      this.onExpired = onExpired || (async () => {});
      this.seen = {}; // topic -> {seq, epoch}
      this.delay = 500;
      this.connect();
    }

    connect() {
      const proto = location.protocol === "https:" ? "wss" : "ws";
      const acting = member ? `&tenant=${encodeURIComponent(member)}` : "";
      const ws = new WebSocket(`${proto}://${location.host}/api/v1/ws?token=${encodeURIComponent(this.tok)}${acting}`);
      this.ws = ws;
      ws.onopen = () => {
        this.delay = 500;
        for (const topic of this.topics) this.subscribe(topic);
      };
      ws.onmessage = (msg) => this.frame(JSON.parse(msg.data));
      ws.onclose = (ev) => {
        this.onStatus(false, ev.reason || `closed (${ev.code})`);
        setTimeout(() => this.connect(), this.delay);
        this.delay = Math.min(this.delay * 2, 10000);
      };
    }

    // Adds a topic to follow (now, if connected; on every reconnect).
    follow(topic) {
      if (this.topics.includes(topic)) return;
      this.topics.push(topic);
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.subscribe(topic);
    }

    // Stops following a topic.
    unfollow(topic) {
      if (!this.topics.includes(topic)) return;
      this.topics = this.topics.filter((t) => t !== topic);
      delete this.seen[topic];
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify({ op: "unsubscribe", topic }));
      }
    }

    subscribe(topic, fresh = false) {
      const frame = { op: "subscribe", topic };
      const seen = this.seen[topic];
      if (seen && !fresh) {
        frame.since = seen.seq;
        frame.epoch = seen.epoch;
      }
      this.ws.send(JSON.stringify(frame));
    }

    async frame(f) {
      if (f.op === "subscribed") {
        this.seen[f.topic] = { seq: f.seq, epoch: f.epoch };
        this.onStatus(true, "live");
      } else if (f.op === "event") {
        const seen = this.seen[f.topic];
        if (seen && f.seq <= seen.seq) return; // already shown
        this.seen[f.topic] = { seq: f.seq, epoch: seen ? seen.epoch : "" };
        this.onEvent(f);
      } else if (f.op === "error" && f.code === "history_expired") {
        delete this.seen[f.topic];
        await this.onExpired(f.topic);
        this.subscribe(f.topic, true);
      } else if (f.op === "error") {
        this.onStatus(false, `${f.code}: ${f.detail}`);
      }
    }
  }

  function status(live, text) {
    const el = document.getElementById("status");
    if (!el) return;
    el.textContent = text;
    el.className = `status ${live ? "live" : "down"}`;
  }

  return { token, forget, signIn, signedIn, api, uuid, esc, yuan, REASONS, Live, status };
})();
