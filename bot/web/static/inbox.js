// The operator inbox. Data is always put into the page with textContent, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("inbox");
  if (!root) return;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const me = root.dataset.user || "api";
  const $ = (id) => document.getElementById(id);
  const TAB_NAMES = { needs_human: "Needs human", mine: "Mine", unassigned: "Unassigned", paused: "Paused",
    failed: "Failed sends", all: "All", test: "Test chats" };
  const state = {
    q: "", tab: "all", label: "", limit: 50, shown: 50, selected: null, test: false, timer: null,
    conv: null, mode: "reply", canned: [], cannedFor: null, found: [], picker: -1, templates: null, lastRead: {},
  };
  // On a touch keyboard there is no Shift+Enter: there Enter makes a new line and the Send button sends.
  const enterSends = !window.matchMedia("(pointer: coarse)").matches;

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ "X-CSRF-Token": csrf, "Content-Type": "application/json" }, opts.headers || {});
    const response = await fetch(path, opts);
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401) { window.location = "/login?next=/inbox"; }
    return { ok: response.ok, status: response.status, body: body || {} };
  }

  const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body || {}) });
  const conversationPath = (suffix) => "/api/conversations/" + encodeURIComponent(state.selected) + suffix;
  // A conversation exactly: the same customer may have written to two of the business's numbers.
  const keyOf = (c) => c.phone_number_id + ":" + c.customer_id;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function timeLeft(until) {
    const s = Math.max(0, Math.round(until - Date.now() / 1000));
    return s >= 60 ? Math.floor(s / 60) + " min" : s + " s";
  }

  // "14:05" today, "Tue 14:05" this week, else "3 Mar".
  function shortTime(seconds) {
    if (!seconds) return "";
    const d = new Date(seconds * 1000);
    const now = new Date();
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (d.toDateString() === now.toDateString()) return hm;
    if (now - d < 6 * 86400000) return d.toLocaleDateString([], { weekday: "short" }) + " " + hm;
    return d.toLocaleDateString([], { day: "numeric", month: "short" });
  }

  // The conversation's state, and whether its latest outgoing message failed (a failed send does not
  // change the state: the AI may still be answering, or a person may hold the conversation).
  function stateLabel(c) {
    const sendFailed = c.last_outbound_status === "failed";
    if (c.is_test) return ["test", "test chat" + (c.state === "ai" ? "" : " · " + c.state.replace("_", " "))];
    if (c.state === "needs_human") return ["needs_human", "needs human"];
    if (c.state === "paused") return ["paused", c.paused_until ? "paused · " + timeLeft(c.paused_until) + " left" : "paused by a human"];
    if (c.state === "failed") return ["failed", "failed"];
    if (sendFailed) return ["failed", "failed · not delivered"];
    return ["ai", "AI answering"];
  }

  // Why the server stopped the AI on its own, for an operator to look at (the conversation's flag).
  const FLAGS = {
    rate_limited: ["flag", "rate-limited: too many messages this hour"],
    loop: ["flag", "another bot on the line: AI paused"],
    budget: ["flag", "monthly budget reached"],
    identity_changed: ["flag", "the customer's identity changed"],
  };

  function flagBadge(c) {
    const found = FLAGS[c.flag];
    return found ? badge(found[0], found[1]) : null;
  }

  function extraFailed(c) {
    return c.last_outbound_status === "failed" && (c.is_test || c.state === "paused" || c.state === "needs_human");
  }

  function badge(cls, label) {
    return el("span", "badge " + cls, label);
  }

  function labelChip(label, onRemove) {
    const chip = el("li", "chip");
    const dot = el("span", "dot");
    if (label.color) dot.style.backgroundColor = label.color;
    chip.append(dot, el("span", "chip-name", label.name));
    if (onRemove) {
      const x = el("button", "chip-x", "×");
      x.type = "button";
      x.title = "Remove the label " + label.name;
      x.setAttribute("aria-label", "Remove the label " + label.name);
      x.addEventListener("click", onRemove);
      chip.append(x);
    }
    return chip;
  }

  // -- the list ------------------------------------------------------------------------------------
  async function loadCounts() {
    const res = await api("/api/conversations/counts");
    if (!res.ok) return;
    const counts = res.body.counts || {};
    for (const button of $("tabs").querySelectorAll("button[data-tab]")) {
      const count = button.querySelector(".count");
      if (count) count.textContent = counts[button.dataset.tab] !== undefined ? String(counts[button.dataset.tab]) : "";
    }
    const select = $("label-filter");
    const options = $("label-options");
    const chosen = select.value;
    select.replaceChildren(new Option("Any label", ""));
    options.replaceChildren();
    for (const label of res.body.labels || []) {
      select.append(new Option(label.name + " (" + label.conversations + ")", String(label.id)));
      options.append(new Option(label.name));
    }
    select.value = chosen;
    if (select.value !== chosen) { state.label = ""; }
  }

  function emptyText() {
    const where = state.tab === "all" ? "" : " in “" + TAB_NAMES[state.tab] + "”";
    const label = state.label ? " with this label" : "";
    if (state.q) return "No conversations match “" + state.q + "”" + where + label + ".";
    if (state.label || state.tab !== "all") return "No conversations" + where + label + ".";
    return "No conversations yet. They appear here as soon as a customer writes.";
  }

  async function loadList() {
    const params = new URLSearchParams({ limit: String(state.shown), q: state.q, tab: state.tab });
    if (state.label) params.set("label", state.label);
    const res = await api("/api/conversations?" + params.toString());
    if (!res.ok) return;
    const list = $("conversations");
    list.replaceChildren();
    const items = res.body.conversations || [];
    for (const c of items) {
      const li = el("li");
      li.dataset.id = keyOf(c);
      li.tabIndex = 0;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(keyOf(c) === state.selected || c.customer_id === state.selected));
      const top = el("div", "conv-top");
      top.append(el("strong", "conv-name", c.name || c.wa_id || c.customer_id));
      if (c.unread) {
        const unread = el("span", "unread", c.unread >= 100 ? "99+" : String(c.unread));
        unread.title = c.unread + " unread";
        unread.setAttribute("aria-label", c.unread + " unread");
        top.append(unread);
      }
      top.append(el("time", "conv-time", shortTime(c.last_activity_at)));
      li.append(top);
      const badges = el("div", "conv-badges");
      const [cls, label] = stateLabel(c);
      badges.append(badge(cls, label));
      if (extraFailed(c)) badges.append(badge("failed", "last send failed"));
      const flagged = flagBadge(c);
      if (flagged) badges.append(flagged);
      if (c.assigned_to) badges.append(badge("holder", c.assigned_to === me ? "yours" : c.assigned_to));
      li.append(badges);
      if (c.labels && c.labels.length) {
        const chips = el("ul", "chips small");
        for (const l of c.labels) chips.append(labelChip(l));
        li.append(chips);
      }
      if (c.wa_id) li.append(el("div", "conv-number muted", "+" + c.wa_id));
      li.append(el("div", "conv-preview", c.last_message || ""));
      // In one's own test chat one writes as the customer; anyone else's is answered as an operator.
      const own = c.is_test && c.customer_id === "test-" + me;
      li.addEventListener("click", () => select(keyOf(c), own));
      li.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); select(keyOf(c), own); }
      });
      list.append(li);
    }
    const empty = $("list-empty");
    empty.textContent = emptyText();
    empty.hidden = items.length > 0;
    $("more").hidden = items.length < state.shown;
  }

  function chooseTab(tab) {
    state.tab = tab;
    state.shown = state.limit;
    for (const button of $("tabs").querySelectorAll("button[data-tab]")) {
      button.setAttribute("aria-pressed", String(button.dataset.tab === tab));
    }
    loadList();
  }

  // -- the thread ----------------------------------------------------------------------------------
  function tick(m) {
    if (m.direction === "in") return "";
    return { queued: "🕓", sending: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓ read", failed: "✗ failed", unknown: "? not confirmed" }[m.status] || m.status;
  }

  // Photos and stickers as lazy previews (a click opens the full size), voice notes as a player with
  // the transcript under it, videos as a player, documents as a link. All come through /api/media/{id}.
  function mediaNode(m) {
    if (!m.media) return null;
    if (m.type === "image" || m.type === "sticker") {
      const a = el("a", "media-link");
      a.href = m.media;
      a.target = "_blank";
      a.rel = "noopener";
      a.title = "Open the full-size " + (m.type === "image" ? "photo" : "sticker");
      const img = el("img", "media" + (m.type === "sticker" ? " sticker" : ""));
      img.loading = "lazy";
      img.alt = m.type === "image" ? (m.text ? "Photo: " + m.text : "Photo from the customer") : "Sticker";
      img.src = m.media;
      a.append(img);
      return a;
    }
    if (m.type === "audio" || m.type === "video") {
      const player = el(m.type);
      player.controls = true;
      player.preload = "none";
      player.src = m.media;
      return player;
    }
    const a = el("a", "media-link", "Open the " + (m.type === "document" ? "document" : m.type));
    a.href = m.media;
    a.target = "_blank";
    a.rel = "noopener";
    return a;
  }

  // What an interactive message offered: reply buttons, or a list behind its button.
  function offeredNode(body) {
    const action = (body && body.action) || {};
    const box = el("div", "offered");
    if (Array.isArray(action.buttons)) {
      const list = el("ul", "offered-buttons");
      list.setAttribute("aria-label", "Buttons offered");
      for (const b of action.buttons) list.append(el("li", "", (b.reply && b.reply.title) || b.title || ""));
      box.append(list);
    } else if (Array.isArray(action.sections)) {
      box.append(el("span", "offered-button", "☰ " + (action.button || "List")));
      const list = el("ul", "offered-rows");
      list.setAttribute("aria-label", "List offered");
      for (const section of action.sections) {
        if (section.title) list.append(el("li", "offered-section", section.title));
        for (const row of section.rows || []) {
          const li = el("li", "", row.title || "");
          if (row.description) li.append(el("small", "", row.description));
          list.append(li);
        }
      }
      box.append(list);
    }
    return box;
  }

  function messageNode(m) {
    if (m.direction === "note") {
      const li = el("li", "msg note");
      li.dataset.author = "note";
      li.append(el("span", "note-tag", "Private note"), document.createTextNode(m.text || ""));
      li.append(el("span", "meta", m.author + " · " + new Date(m.created_at * 1000).toLocaleString() + " · never sent"));
      return li;
    }
    const li = el("li", "msg " + (m.direction === "out" ? "out " : "") + m.author + (m.deleted_at ? " deleted" : ""));
    li.dataset.author = m.author;
    if (m.deleted_at) li.append(el("span", "deleted-tag", "Deleted by the customer"));
    li.dataset.type = m.type || "text";
    const media = m.type && !["text", "interactive", "choices", "button", "template"].includes(m.type);
    if (media) {
      const node = mediaNode(m);
      if (node) li.append(node);
      else li.append(el("em", "", m.type === "audio" ? "voice note" : "[" + m.type + "]"));
      if (m.type === "audio") {
        li.append(el("span", "transcript", m.text ? "Transcript: " + m.text : "(no transcript yet)"));
      } else if (m.text) {
        li.append(el("span", "transcript", m.text));
      }
    } else {
      if (m.kind === "template") {
        const name = m.body && m.body.name ? m.body.name + (m.body.language ? " · " + m.body.language.code : "") : "";
        li.append(el("span", "template-tag", "Template" + (name ? ": " + name : "")));
      }
      const offered = (m.kind === "interactive" || m.kind === "choices") && m.direction === "out" && m.body;
      // Offered as buttons or a list: the question as the customer read it, then what they could tap.
      const text = offered && m.body.body && m.body.body.text ? m.body.body.text : m.text || "";
      li.append(m.deleted_at ? el("s", "deleted-text", text) : document.createTextNode(text));
      if (offered) li.append(offeredNode(m.body));
    }
    const who = { customer: "customer", ai: "AI", operator: "operator", system: "automatic" }[m.author] || m.author;
    const when = new Date(m.created_at * 1000).toLocaleString();
    li.append(el("span", "meta", who + " · " + when + (tick(m) ? " · " + tick(m) : "")));
    if (m.error) li.append(el("span", "meta fail", m.error));
    return li;
  }

  function windowBadge(c) {
    const badgeNode = $("thread-window");
    badgeNode.hidden = c.is_test;
    if (c.is_test) return;
    if (c.window_open) {
      const until = new Date(c.window_closes_at * 1000).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" });
      badgeNode.className = "badge window open";
      badgeNode.textContent = "window open · until " + until;
      badgeNode.title = "Free-form replies are allowed until then (24 hours after the customer's last message)";
    } else {
      badgeNode.className = "badge window closed";
      badgeNode.textContent = "24 h window closed · templates only";
      badgeNode.title = "The customer's last message is over 24 hours old";
    }
  }

  function showLabels(c) {
    const list = $("thread-labels");
    list.replaceChildren(...(c.labels || []).map((l) => labelChip(l, async () => {
      await api(conversationPath("/labels/" + l.id), { method: "DELETE" });
      refreshSoon();
    })));
  }

  async function loadThread() {
    if (!state.selected) return;
    const wanted = state.selected;
    const res = await api(conversationPath("/messages"));
    if (!res.ok || state.selected !== wanted) return;
    const c = res.body.conversation;
    state.conv = c;
    $("thread-name").textContent = c.name || c.wa_id || c.customer_id;
    $("thread-number").textContent = c.wa_id ? "+" + c.wa_id : (c.is_test ? "" : c.customer_id);
    const [cls, label] = stateLabel(c);
    const stateBadge = $("thread-state");
    stateBadge.className = "badge " + cls;
    stateBadge.textContent = label;
    $("thread-failed").hidden = !extraFailed(c);
    const flagged = flagBadge(c);
    $("thread-flag").hidden = !flagged;
    $("thread-flag").textContent = flagged ? flagged.textContent : "";
    const holder = $("thread-holder");
    holder.hidden = !c.assigned_to;
    holder.textContent = c.assigned_to ? (c.assigned_to === me ? "taken by you" : "taken by " + c.assigned_to) : "";
    windowBadge(c);
    showLabels(c);
    const list = $("messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const notes = (res.body.notes || []).map((n) => Object.assign({ direction: "note", id: "note-" + n.id }, n));
    const items = (res.body.messages || []).concat(notes).sort((a, b) => a.created_at - b.created_at);
    // Unchanged messages keep their nodes: a voice note being played, or a photo, is not reloaded.
    const shown = new Map([...list.children].map((li) => [li.dataset.key, li]));
    list.replaceChildren(...items.map((m) => {
      const key = m.id + "|" + m.status + "|" + (m.text || "") + "|" + (m.error || "");
      const node = shown.get(key) || messageNode(m);
      node.dataset.key = key;
      return node;
    }));
    if (atBottom || list.dataset.for !== wanted) list.scrollTop = list.scrollHeight;
    list.dataset.for = wanted;
    const held = c.state === "paused" || c.state === "needs_human";
    $("pause").hidden = held;
    // Hand back also lifts a rate limit: the operator decides the AI may answer this customer again.
    $("resume").hidden = !held && c.flag !== "rate_limited";
    $("take").hidden = c.assigned_to === me;
    showComposer();
    const lastIn = (res.body.messages || []).filter((m) => m.direction === "in").pop();
    if (lastIn && state.lastRead[wanted] !== lastIn.id && document.visibilityState === "visible") {
      state.lastRead[wanted] = lastIn.id;
      post(conversationPath("/read"), { up_to: lastIn.id });
    }
    if (!$("contact").hidden) loadContact();
  }

  function showThread(open) {
    root.classList.toggle("open", open);
    $("thread").hidden = !open;
    $("thread-empty").hidden = open;
    if (!open) showContact(false);
  }

  function select(id, test) {
    if (state.selected !== id) {
      // Nothing of the previous conversation may stay on screen while the new one loads.
      $("messages").replaceChildren();
      for (const name of ["thread-name", "thread-number", "thread-state"]) $(name).textContent = "";
      for (const name of ["thread-failed", "thread-holder", "thread-window", "pause", "resume", "take"]) $(name).hidden = true;
      $("thread-labels").replaceChildren();
      state.conv = null;
      closePicker();
    }
    state.selected = id;
    state.test = test;
    showThread(true);
    $("reply-error").textContent = "";
    setMode("reply");
    loadThread();
    loadList();
    if (!$("contact").hidden) loadContact();
  }

  function refreshSoon() {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => { loadList(); loadThread(); loadCounts(); }, 120);
  }

  // -- the composer: reply, private note, or a template once the 24-hour window has closed -----------
  function windowClosed() {
    return state.conv && !state.conv.is_test && !state.conv.window_open && !state.test;
  }

  function setMode(mode) {
    state.mode = mode;
    $("mode-reply").setAttribute("aria-pressed", String(mode === "reply"));
    $("mode-note").setAttribute("aria-pressed", String(mode === "note"));
    showComposer();
  }

  function showComposer() {
    const note = state.mode === "note";
    const templates = !note && windowClosed();
    $("reply").hidden = templates;
    $("template-form").hidden = !templates;
    $("reply").classList.toggle("note-mode", note);
    $("send").textContent = note ? "Add note" : "Send";
    $("reply-label").textContent = note
      ? "Private note (only the team sees it; never sent to the customer)"
      : state.test ? "Write as the customer (test chat: nothing goes to WhatsApp)" : "Reply as operator (pauses the AI)";
    if (templates) loadTemplates();
  }

  $("mode-reply").addEventListener("click", () => setMode("reply"));
  $("mode-note").addEventListener("click", () => setMode("note"));

  $("reply").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("reply-text");
    const text = box.value.trim();
    if (!state.selected) return;
    if (!text) { $("reply-error").textContent = state.mode === "note" ? "Write the note first." : "Write a message first."; return; }
    let path = state.test ? "/api/test-chat/messages" : conversationPath("/messages");
    if (state.mode === "note") path = conversationPath("/notes");
    const res = await post(path, { text: text });
    if (res.ok) {
      box.value = "";
      // The test chat says why no answer will come (no OpenAI key), right under the message.
      $("reply-error").textContent = (res.body && res.body.warning) || "";
      closePicker();
      refreshSoon();
    }
    else { $("reply-error").textContent = res.body.error || "Could not send (HTTP " + res.status + ")"; }
  });

  // Canned replies: "/" at the start of a word opens a picker, filtered as you type, keyboard navigable.
  async function loadCanned() {
    if (state.cannedFor === state.selected) return;
    const res = await api("/api/canned-replies?conversation=" + encodeURIComponent(state.selected));
    if (!res.ok) return;
    state.canned = res.body.canned_replies || [];
    state.cannedFor = state.selected;
  }

  function slashWord() {
    const box = $("reply-text");
    const before = box.value.slice(0, box.selectionStart);
    const match = /(^|\s)\/([\w-]*)$/.exec(before);
    return match ? { query: match[2].toLowerCase(), start: before.length - match[2].length - 1 } : null;
  }

  function closePicker() {
    $("canned-picker").hidden = true;
    $("canned-picker").replaceChildren();
    state.picker = -1;
    $("reply-text").removeAttribute("aria-activedescendant");
  }

  function pickerItems() {
    return [...$("canned-picker").querySelectorAll("li[role=option]")];
  }

  function highlight(index) {
    const items = pickerItems();
    state.picker = items.length ? (index + items.length) % items.length : -1;
    items.forEach((li, i) => li.setAttribute("aria-selected", String(i === state.picker)));
    if (state.picker >= 0) {
      $("reply-text").setAttribute("aria-activedescendant", items[state.picker].id);
      items[state.picker].scrollIntoView({ block: "nearest" });
    }
  }

  function insertCanned(reply) {
    const word = slashWord();
    const box = $("reply-text");
    if (!word) return;
    const end = box.selectionStart;
    box.value = box.value.slice(0, word.start) + reply.filled + box.value.slice(end);
    const caret = word.start + reply.filled.length;
    box.setSelectionRange(caret, caret);
    closePicker();
    box.focus();
  }

  async function updatePicker() {
    const word = slashWord();
    if (!word) { closePicker(); return; }
    await loadCanned();
    // Shortcuts that start with what was typed first, then those that contain it.
    const found = state.canned.filter((r) => r.shortcut.includes(word.query))
      .sort((a, b) => Number(b.shortcut.startsWith(word.query)) - Number(a.shortcut.startsWith(word.query)))
      .slice(0, 8);
    state.found = found;
    const picker = $("canned-picker");
    picker.replaceChildren();
    if (!found.length) {
      picker.append(el("li", "picker-empty", state.canned.length ? "No canned reply starts with /" + word.query
        : "No canned replies yet: an admin adds them on the settings page."));
    }
    found.forEach((reply, i) => {
      const li = el("li");
      li.id = "canned-option-" + i;
      li.setAttribute("role", "option");
      li.append(el("strong", "", "/" + reply.shortcut), el("span", "picker-text", reply.filled));
      // mousedown, not click: the textarea must keep its caret (a click would blur it first).
      li.addEventListener("mousedown", (event) => { event.preventDefault(); insertCanned(reply); });
      picker.append(li);
    });
    picker.hidden = false;
    highlight(found.length ? 0 : -1);
  }

  $("reply-text").addEventListener("input", updatePicker);
  $("reply-text").addEventListener("blur", () => setTimeout(closePicker, 150));
  $("reply-text").addEventListener("keydown", (event) => {
    if (!$("canned-picker").hidden) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        highlight(state.picker + (event.key === "ArrowDown" ? 1 : -1));
        return;
      }
      if ((event.key === "Enter" || event.key === "Tab") && state.picker >= 0) {
        event.preventDefault();
        if (state.found[state.picker]) insertCanned(state.found[state.picker]);
        return;
      }
      if (event.key === "Escape") { event.preventDefault(); closePicker(); return; }
    }
    // isComposing: Enter that confirms an IME composition (Japanese, Chinese…) must not send.
    if (event.key === "Enter" && enterSends && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("reply").requestSubmit();
    }
  });

  // Templates: the only way to write once the customer's last message is more than 24 hours old.
  async function loadTemplates() {
    if (state.templates === null) {
      const res = await api("/api/templates");
      state.templates = res.ok ? res.body : { templates: [] };
      const selectBox = $("template-select");
      selectBox.replaceChildren();
      const approved = (state.templates.templates || []).filter((t) => t.status === "APPROVED");
      for (const t of state.templates.templates || []) {
        const option = new Option(t.name + " · " + t.language + (t.category ? " · " + t.category.toLowerCase() : "")
          + (t.status === "APPROVED" ? "" : " (" + t.status.toLowerCase() + ")"), t.name + "|" + t.language);
        option.disabled = t.status !== "APPROVED";
        selectBox.append(option);
      }
      const none = $("template-none");
      none.hidden = approved.length > 0;
      none.textContent = state.templates.problem
        || "No approved templates yet: an admin syncs them on the settings page, after creating them in WhatsApp Manager.";
      for (const node of [selectBox, $("template-select-label")]) node.hidden = !approved.length;
      if (approved.length) selectBox.value = approved[0].name + "|" + approved[0].language;
      showTemplate();
    }
  }

  function currentTemplate() {
    const value = $("template-select").value;
    return (state.templates && state.templates.templates || []).find((t) => t.name + "|" + t.language === value) || null;
  }

  function showTemplate() {
    const t = currentTemplate();
    const params = $("template-params");
    params.replaceChildren();
    $("template-send").disabled = !t;
    if (t) {
      t.parameters.forEach((name, i) => {
        const id = "template-param-" + i;
        const label = el("label", "", "{{" + name + "}}");
        label.htmlFor = id;
        const input = el("input");
        input.id = id;
        input.maxLength = 1024;
        input.dataset.name = name;
        input.placeholder = i === 0 && state.conv && state.conv.name ? state.conv.name : "";
        input.addEventListener("input", previewTemplate);
        params.append(label, input);
      });
    }
    previewTemplate();
  }

  function previewTemplate() {
    const t = currentTemplate();
    const box = $("template-preview");
    box.replaceChildren();
    $("template-preview-box").hidden = !t;
    if (!t) return;
    const values = {};
    for (const input of $("template-params").querySelectorAll("input")) values[input.dataset.name] = input.value.trim();
    const fill = (text) => (text || "").replace(/\{\{\s*([A-Za-z0-9_]+)\s*\}\}/g, (all, name) => values[name] || all);
    if (t.header) box.append(el("strong", "preview-header", t.header));
    box.append(el("p", "preview-body", fill(t.body)));
    if (t.footer) box.append(el("small", "preview-footer", t.footer));
    if (t.buttons && t.buttons.length) {
      const buttons = el("ul", "offered-buttons");
      for (const b of t.buttons) buttons.append(el("li", "", b));
      box.append(buttons);
    }
  }

  $("template-select").addEventListener("change", showTemplate);
  $("template-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const t = currentTemplate();
    if (!t || !state.selected) return;
    const parameters = [...$("template-params").querySelectorAll("input")].map((i) => i.value.trim());
    const res = await post(conversationPath("/template"), { name: t.name, language: t.language, parameters: parameters });
    if (res.ok) {
      $("template-error").textContent = "";
      for (const input of $("template-params").querySelectorAll("input")) input.value = "";
      previewTemplate();
      refreshSoon();
    } else {
      $("template-error").textContent = res.body.error || "Could not send (HTTP " + res.status + ")";
    }
  });

  // -- actions ---------------------------------------------------------------------------------------
  $("take").addEventListener("click", async () => { await post(conversationPath("/take")); refreshSoon(); });
  $("pause").addEventListener("click", async () => { await post(conversationPath("/pause")); refreshSoon(); });
  $("resume").addEventListener("click", async () => { await post(conversationPath("/resume")); refreshSoon(); });
  $("label-add").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("label-input").value.trim();
    if (!name || !state.selected) return;
    const res = await post(conversationPath("/labels"), { name: name, color: $("label-color").value || null });
    if (res.ok) { $("label-input").value = ""; $("label-box").open = false; refreshSoon(); }
    else { $("reply-error").textContent = res.body.error || "Could not add the label"; }
  });
  // Test chats are kept out of the other tabs: show theirs.
  $("test-chat").addEventListener("click", () => { chooseTab("test"); select("test-" + me, true); });
  $("back").addEventListener("click", () => {
    state.selected = null;
    showThread(false);
    loadList();
  });
  $("more").addEventListener("click", () => { state.shown += state.limit; loadList(); });
  for (const button of $("tabs").querySelectorAll("button[data-tab]")) {
    button.addEventListener("click", () => chooseTab(button.dataset.tab));
  }
  $("label-filter").addEventListener("change", (e) => { state.label = e.target.value; state.shown = state.limit; loadList(); });
  let searchTimer = null;
  $("search").addEventListener("input", (e) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.q = e.target.value.trim(); state.shown = state.limit; loadList(); }, 200);
  });

  // -- the contact panel -----------------------------------------------------------------------------
  function showContact(open) {
    $("contact").hidden = !open;
    root.classList.toggle("show-contact", open);
    $("contact-toggle").setAttribute("aria-expanded", String(open));
    if (open) loadContact();
  }

  async function loadContact() {
    if (!state.selected) return;
    const wanted = state.selected;
    const res = await api(conversationPath("/contact"));
    if (!res.ok || state.selected !== wanted) return;
    const contact = res.body.contact || {};
    const form = $("contact-form");
    for (const field of ["name", "email", "company", "language", "notes"]) {
      const input = form.elements[field];
      if (document.activeElement !== input) input.value = contact[field] || "";
    }
    const orders = $("contact-orders");
    orders.replaceChildren();
    for (const o of res.body.orders || []) {
      const li = el("li");
      li.append(el("strong", "", o.code), badge("status-" + o.status, o.status), el("span", "", o.total));
      orders.append(li);
    }
    if (!orders.children.length) orders.append(el("li", "muted", "No orders."));
    const others = $("contact-others");
    others.replaceChildren();
    for (const c of res.body.conversations || []) {
      const li = el("li");
      li.append(el("span", "", "on " + c.phone_number_id + " · " + shortTime(c.last_activity_at)));
      if (c.last_message) li.append(el("span", "muted", " “" + c.last_message + "”"));
      others.append(li);
    }
    if (!others.children.length) others.append(el("li", "muted", "None on the other business numbers."));
    const base = "/api/conversations/" + encodeURIComponent(wanted) + "/export?format=";
    $("export-csv").href = base + "csv";
    $("export-json").href = base + "json";
  }

  $("contact-toggle").addEventListener("click", () => showContact($("contact").hidden));
  $("contact-close").addEventListener("click", () => showContact(false));
  $("contact-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const body = {};
    for (const field of ["name", "email", "company", "language", "notes"]) body[field] = form.elements[field].value;
    if (!body.name.trim()) delete body.name;
    const res = await api(conversationPath("/contact"), { method: "PUT", body: JSON.stringify(body) });
    $("contact-status").textContent = res.ok ? "Saved." : (res.body.error || "Could not save (HTTP " + res.status + ")");
    $("contact-status").className = res.ok ? "hint ok-text" : "hint error-text";
    if (res.ok) refreshSoon();
  });

  // -- browser notifications when a conversation starts needing a person (opt-in) -------------------------
  const canNotify = "Notification" in window;
  function notifyButton() {
    const button = $("notify");
    button.hidden = !canNotify || Notification.permission === "denied";
    const on = canNotify && Notification.permission === "granted" && localStorage.getItem("bot.notify") === "1";
    button.textContent = on ? "Notifications on" : "Notify me";
    button.setAttribute("aria-pressed", String(on));
  }

  $("notify").addEventListener("click", async () => {
    if (localStorage.getItem("bot.notify") === "1" && Notification.permission === "granted") {
      localStorage.removeItem("bot.notify");
    } else if (await Notification.requestPermission() === "granted") {
      localStorage.setItem("bot.notify", "1");
    }
    notifyButton();
  });

  async function notifyNeedsHuman(customer) {
    if (!canNotify || Notification.permission !== "granted" || localStorage.getItem("bot.notify") !== "1") return;
    const res = await api("/api/conversations?tab=needs_human&limit=50");
    const c = (res.body.conversations || []).find((x) => x.customer_id === customer);
    const who = c ? (c.name || (c.wa_id ? "+" + c.wa_id : customer)) : customer;
    const notice = new Notification("A customer needs a person", { body: who, tag: "needs-human-" + customer });
    notice.onclick = () => { window.focus(); select(c ? keyOf(c) : customer, false); };
  }

  // -- live updates: the browser resends Last-Event-ID on reconnect, and the server replays what was missed --
  const events = new EventSource("/inbox/events");
  for (const kind of ["message", "status", "reset"]) events.addEventListener(kind, refreshSoon);
  events.addEventListener("conversation", (event) => {
    refreshSoon();
    let data = {};
    try { data = JSON.parse(event.data); } catch (e) { data = {}; }
    if (data.change === "needs_human" && data.conversation) notifyNeedsHuman(data.conversation);
  });
  events.onopen = refreshSoon;
  notifyButton();
  loadCounts();
  loadList();
  const wanted = decodeURIComponent(window.location.hash.slice(1));
  if (wanted) select(wanted, false);
  setInterval(() => { loadList(); loadCounts(); }, 30000);  // keeps cooldown countdowns fresh
})();
