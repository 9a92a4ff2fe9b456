// restic-manager's own page script: live updates over one EventSource and
// small conveniences. Pages are complete without it. No framework, no
// build step. Live updates never reload the page: progress bars and log
// tails are updated in place, and other changes re-fetch the page in the
// background and swap only the fragments marked `data-swap` whose HTML
// changed, so scroll position, selection and form input are kept.
(function () {
  'use strict';
  var doc = document;
  doc.documentElement.classList.remove('no-js');

  function $(sel, root) { return (root || doc).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || doc).querySelectorAll(sel)); }
  function csrf() { var m = $('meta[name="csrf-token"]'); return m ? m.content : ''; }

  // ---- formatting, as the server formats (web/src/ui/fmt.rs) ----
  function bytes(n) {
    if (n == null) return '—';
    var units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    if (Math.abs(n) < 1024) return n + ' B';
    var v = n / 1024, u = 0;
    while (Math.abs(v) >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return v.toFixed(1) + ' ' + units[u];
  }
  function duration(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' m ' + (s % 60) + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' m';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }
  function relative(ms) {
    var d = Math.round((Date.now() - ms) / 1000), future = d < 0, s = Math.abs(d), a;
    if (s < 10) return future ? 'in a few s' : 'just now';
    if (s < 60) a = s + ' s'; else if (s < 3600) a = Math.floor(s / 60) + ' m';
    else if (s < 86400) a = Math.floor(s / 3600) + ' h'; else a = Math.floor(s / 86400) + ' d';
    return future ? 'in ' + a : a + ' ago';
  }
  // The browser's time zone: forms send it (mute "until" is read in it)
  // and absolute times marked data-local are shown in it.
  var browserTz = '';
  try { browserTz = Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch (e) { browserTz = ''; }
  function localTimes() {
    if (!browserTz) return;
    var f;
    try {
      f = new Intl.DateTimeFormat('sv-SE', { timeZone: browserTz, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' });
    } catch (e) { return; }
    $$('time[data-local]').forEach(function (t) {
      var ms = Date.parse(t.getAttribute('datetime'));
      if (!isNaN(ms)) t.textContent = f.format(new Date(ms)) + ' ' + browserTz;
    });
    $$('input[data-browser-tz]').forEach(function (i) { i.value = browserTz; });
    $$('[data-tz-name]').forEach(function (s) { s.textContent = browserTz; });
  }
  function refreshTimes() {
    $$('time[data-rel]').forEach(function (t) {
      var ms = Date.parse(t.getAttribute('datetime'));
      if (!isNaN(ms)) t.textContent = relative(ms);
    });
    localTimes();
  }
  localTimes();
  setInterval(refreshTimes, 15000);

  // ---- menu button at narrow widths ----
  var toggle = $('.menu-toggle'), nav = $('#mainnav');
  if (toggle && nav) {
    toggle.addEventListener('click', function () {
      var open = nav.classList.toggle('open');
      toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
    });
  }

  // ---- filter forms submit themselves ----
  // (Also bound on a fragment that arrives later: an empty dashboard's first host.)
  function autosubmit(root) {
    $$('form[data-autosubmit]', root).forEach(function (form) {
      var timer;
      form.addEventListener('change', function () { form.requestSubmit ? form.requestSubmit() : form.submit(); });
      $$('input[type=search]:not([data-host-search]):not([data-repo-search])', form).forEach(function (input) {
        input.addEventListener('input', function () {
          clearTimeout(timer);
          timer = setTimeout(function () { form.requestSubmit ? form.requestSubmit() : form.submit(); }, 500);
        });
      });
    });
  }
  autosubmit(doc);

  // ---- host and repository fields: names suggested from the server ----
  // (GET /api/v1/host-names, GET /api/v1/repos), never the whole fleet
  // in the page. Picking a suggestion submits a self-submitting form; the
  // server takes a name or an id.
  $$('input[data-host-search], input[data-repo-search]').forEach(function (input) {
    var list = input.list, timer = null, seq = 0;
    var source = input.hasAttribute('data-repo-search') ? '/api/v1/repos' : '/api/v1/host-names';
    if (!list || !window.fetch) return;
    function picked() {
      return $$('option', list).some(function (o) { return o.value === input.value; });
    }
    input.addEventListener('input', function (e) {
      var form = input.form;
      if (form && form.hasAttribute('data-autosubmit') && e.inputType === 'insertReplacementText' && picked()) {
        form.requestSubmit ? form.requestSubmit() : form.submit();
        return;
      }
      clearTimeout(timer);
      timer = setTimeout(function () {
        var mine = ++seq;
        fetch(source + '?limit=20&q=' + encodeURIComponent(input.value.trim()), { credentials: 'same-origin' })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (page) {
            if (!page || mine !== seq) return;
            while (list.firstChild) list.removeChild(list.firstChild);
            page.items.forEach(function (h) {
              var o = doc.createElement('option'); o.value = h.name; list.appendChild(o);
            });
          })
          .catch(function () {});
      }, 250);
    });
  });

  // ---- confirmations: buttons with data-confirm ask first ----
  doc.addEventListener('submit', function (e) {
    var btn = e.submitter, form = e.target;
    var msg = (btn && btn.getAttribute('data-confirm')) || form.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) e.preventDefault();
  });

  // ---- restore wizard: opening a folder keeps the ticked entries ----
  // (Without script, the form's "Keep selection" button does that.)
  doc.addEventListener('click', function (e) {
    var a = e.target.closest('form[data-carry-sel] a[data-dir]');
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey) return;
    var form = a.closest('form');
    e.preventDefault();
    form.elements.dir.value = a.getAttribute('data-dir');
    form.elements.page.value = '1';
    form.submit();
  });

  // ---- copy buttons ----
  doc.addEventListener('click', function (e) {
    var b = e.target.closest('[data-copy]');
    if (!b) return;
    var src = doc.getElementById(b.getAttribute('data-copy'));
    if (!src || !navigator.clipboard) return;
    navigator.clipboard.writeText(src.textContent.trim()).then(function () {
      var old = b.textContent; b.textContent = 'Copied'; setTimeout(function () { b.textContent = old; }, 1500);
    });
  });

  // ---- settings: channel type switch and inline "Send test notification" ----
  $$('select[data-kind-select]').forEach(function (sel) {
    var form = sel.form;
    function show() {
      $$('fieldset[data-kind]', form).forEach(function (fs) {
        if (fs.getAttribute('data-kind') === sel.value) fs.removeAttribute('data-inactive');
        else fs.setAttribute('data-inactive', '');
      });
    }
    sel.addEventListener('change', show);
    show();
  });
  $$('form[data-inline-test]').forEach(function (form) {
    var button = $('button[name=action][value=test]', form);
    if (!button || !window.fetch || !window.DOMParser) return;
    button.addEventListener('click', function (ev) {
      ev.preventDefault();
      var out = $('#test-result', form);
      var body = new URLSearchParams(new FormData(form));
      body.set('action', 'test');
      button.disabled = true;
      if (out) { out.setAttribute('data-busy', ''); out.innerHTML = '<p>Sending a test notification…</p>'; }
      // not form.action: the buttons named "action" shadow that property
      fetch(form.getAttribute('action'), {
        method: 'POST', credentials: 'same-origin', body: body,
        headers: { 'X-CSRF-Token': csrf(), 'Content-Type': 'application/x-www-form-urlencoded' },
      }).then(function (r) { return r.text().then(function (t) { return [r.status, t]; }); }).then(function (res) {
        var page = new DOMParser().parseFromString(res[1], 'text/html');
        var fresh = page.querySelector('#test-result');
        if (out && fresh) out.innerHTML = fresh.innerHTML;
        else if (out) {
          var said = page.querySelector('main p');
          out.innerHTML = '<p class="test-fail s-fail"><span class="mark" aria-hidden="true">✗</span> <strong>Not sent</strong> · the server answered HTTP ' + res[0] + '</p><p class="test-error"></p>';
          out.lastChild.textContent = said ? said.textContent : '';
        }
        // field messages from the server, if the values were refused
        $$('.field .error', form).forEach(function (e) { e.remove(); });
        $$('[aria-invalid]', form).forEach(function (e) { e.removeAttribute('aria-invalid'); });
        $$('.field .error', page).forEach(function (e) {
          var input = e.id && $('#' + e.id.replace(/-error$/, ''), form);
          if (input) { input.setAttribute('aria-invalid', 'true'); input.parentNode.appendChild(e); }
        });
      }).catch(function (err) {
        if (out) out.innerHTML = '<p class="test-fail s-fail">✗ The request failed: ' + String(err).replace(/[<&]/g, '') + '</p>';
      }).then(function () {
        button.disabled = false;
        if (out) out.removeAttribute('data-busy');
      });
    });
  });
  // ---- schedule form: the cron's reading and next runs as you type ----
  var cronInput = $('[data-cron]'), tzInput = $('[data-cron-tz]');
  if (cronInput && tzInput) {
    var cronTimer = null, cronSeq = 0;
    var words = function () { return $('[data-cron-words]'); };
    var next = function () { return $('[data-cron-next]'); };
    var showCron = function (text, list, bad) {
      var w = words(), n = next();
      if (w) { w.textContent = text; w.classList.toggle('error', !!bad); }
      if (n) {
        while (n.firstChild) n.removeChild(n.firstChild);
        list.forEach(function (t) { var li = doc.createElement('li'); li.textContent = t; n.appendChild(li); });
      }
    };
    var readable = function (t) { // 2026-12-02T03:00:00+01:00 -> 2026-12-02 03:00 +01:00
      return t.length >= 20 ? t.slice(0, 10) + ' ' + t.slice(11, 16) + ' ' + t.slice(19) : t;
    };
    var updateCron = function () {
      var expr = cronInput.value.trim(), tz = tzInput.value.trim() || 'UTC';
      if (!expr) { showCron('Give a cron expression, e.g. 0 3 * * *.', [], true); return; }
      var seq = ++cronSeq;
      fetch('/api/v1/cron/preview?count=5&expr=' + encodeURIComponent(expr) + '&tz=' + encodeURIComponent(tz), { credentials: 'same-origin' })
        .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
        .then(function (res) {
          if (seq !== cronSeq) return; // a newer keystroke won
          if (res.ok) showCron(res.j.reading + ' in ' + res.j.tz, res.j.next.map(readable), false);
          else showCron((res.j.error && res.j.error.message) || 'not a valid schedule', [], true);
        })
        .catch(function () {});
    };
    var onCronInput = function () { clearTimeout(cronTimer); cronTimer = setTimeout(updateCron, 300); };
    cronInput.addEventListener('input', onCronInput);
    tzInput.addEventListener('input', onCronInput);
  }

  // ---- live updates ----
  var body = doc.body;
  var topics = body.getAttribute('data-topics');
  if (!topics || !window.EventSource) {
    $$('[data-live]').forEach(function (el) { el.textContent = ''; });
    return;
  }
  function setLive(state, text) {
    $$('[data-live]').forEach(function (el) { el.setAttribute('data-state', state); el.textContent = text; });
  }

  // Background re-fetch of this page; swaps changed [data-swap] fragments.
  var refetchTimer = null, refetching = false, again = false;
  function refetchSoon() {
    if (refetchTimer) return;
    refetchTimer = setTimeout(refetch, 700);
  }
  function refetch() {
    refetchTimer = null;
    if (refetching) { again = true; return; }
    refetching = true;
    fetch(location.href, { credentials: 'same-origin', headers: { 'X-Requested-With': 'fetch' } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(swapFrom)
      .catch(function () {})
      .then(function () { refetching = false; if (again) { again = false; refetchSoon(); } });
  }
  // Swaps this page's [data-swap] fragments (by id) whose HTML changed.
  function swapFrom(html) {
    if (!html) return;
    var fresh = typeof html === 'string' ? new DOMParser().parseFromString(html, 'text/html') : html;
    $$('[data-swap]', fresh).forEach(function (el) {
      if (!el.id) return;
      var cur = doc.getElementById(el.id);
      if (!cur) return;
      if (cur.contains(doc.activeElement) && cur.matches('form, form *')) return; // never under the user's cursor
      if (cur.outerHTML !== el.outerHTML) cur.replaceWith(doc.importNode(el, true));
    });
    // An empty install's dashboard: once the page has its first host, the
    // empty note gives way to the whole fleet view (counters, filters,
    // table), which later events refresh narrowly through the fragment.
    $$('[data-until-filled]').forEach(function (cur) {
      var el = fresh.getElementById(cur.id);
      if (!el || el.hasAttribute('data-until-filled')) return;
      el = doc.importNode(el, true);
      cur.replaceWith(el);
      autosubmit(el);
      rescope();
    });
    refreshTimes();
  }

  // The dashboard refreshes narrowly: GET /fragments/fleet with the page's
  // own filter, the hosts events named and the rows shown. It answers the
  // counters, the pager, the ids of the filter's page in order and the rows
  // to render, so a row whose host left the filter goes, a host that
  // entered it (or a new one) comes, in the page's sort and size, and the
  // other rows stay as they are. Other pages re-fetch themselves.
  var pendingHosts = {}, fragTimer = null, fragBusy = false, fragAgain = false;
  function fleetRows() { return $$('#fleet > tbody > tr[data-host]'); }
  function hostChanged(hostId) {
    var fragment = $('[data-fragment-url]');
    if (!fragment || !doc.getElementById('fleet')) { refetchSoon(); return; }
    if (hostId) pendingHosts[hostId] = true;
    if (!fragTimer) fragTimer = setTimeout(fetchFragment, 700);
  }
  function fetchFragment() {
    fragTimer = null;
    if (fragBusy) { fragAgain = true; return; }
    var fragment = $('[data-fragment-url]');
    if (!fragment) return;
    var have = fleetRows().map(function (tr) { return tr.getAttribute('data-host'); });
    // Only the shown rows an event named need re-rendering; any event may
    // move a host into or out of the filter, which the answer's order says.
    var ids = Object.keys(pendingHosts).filter(function (id) { return have.indexOf(id) >= 0; });
    pendingHosts = {};
    fragBusy = true;
    var query = fragment.getAttribute('data-fragment-query') || '';
    var url = fragment.getAttribute('data-fragment-url') + (query ? query + '&' : '?') +
      'ids=' + encodeURIComponent(ids.join(',')) + '&have=' + encodeURIComponent(have.join(','));
    fetch(url, { credentials: 'same-origin', headers: { 'X-Requested-With': 'fetch' } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(applyFleet)
      .catch(function () {})
      .then(function () {
        fragBusy = false;
        if (fragAgain || Object.keys(pendingHosts).length) { fragAgain = false; hostChanged(null); }
      });
  }
  // Swaps the counters, the pager and the rendered rows, then makes the
  // table hold exactly the answer's rows in the answer's order.
  function applyFleet(html) {
    if (!html) return;
    var fresh = new DOMParser().parseFromString(html, 'text/html');
    var list = fresh.querySelector('tbody[data-order]');
    var tbody = $('#fleet > tbody');
    if (!list || !tbody) { swapFrom(html); return; }
    var order = (list.getAttribute('data-order') || '').split(',').filter(Boolean);
    var incoming = {};
    $$('tr[data-host]', list).forEach(function (tr) { incoming[tr.getAttribute('data-host')] = tr; tr.remove(); });
    swapFrom(fresh);
    var keep = {};
    order.forEach(function (id) { keep[id] = true; });
    fleetRows().forEach(function (tr) { if (!keep[tr.getAttribute('data-host')]) tr.remove(); });
    var pos = 0;
    order.forEach(function (id) {
      var cur = doc.getElementById('host-' + id), row = incoming[id];
      if (row && (!cur || cur.outerHTML !== row.outerHTML)) {
        row = doc.importNode(row, true);
        if (cur) cur.replaceWith(row);
        cur = row;
      }
      if (!cur) return;
      var at = tbody.children[pos] || null;
      if (at !== cur) tbody.insertBefore(cur, at);
      pos++;
    });
    var wrap = doc.getElementById('fleet-wrap');
    if (wrap) wrap.hidden = order.length === 0;
    refreshTimes();
    rescope();
  }

  function onProgress(jobId, p) {
    var pct = p.percent_done != null ? Math.max(0, Math.min(100, p.percent_done * 100)) : null;
    $$('[data-progress-bar="' + jobId + '"]').forEach(function (bar) {
      if (pct == null) return;
      bar.classList.remove('indeterminate');
      bar.setAttribute('aria-valuenow', String(Math.round(pct)));
      var fill = bar.firstElementChild; if (fill) fill.style.width = pct.toFixed(1) + '%';
    });
    var rate = p.elapsed_ms > 0 && p.bytes_done != null ? p.bytes_done / (p.elapsed_ms / 1000) : null;
    var parts = [];
    if (pct != null) parts.push(Math.floor(pct) + ' %');
    if (rate != null) parts.push(bytes(Math.round(rate)) + '/s');
    if (p.seconds_remaining != null) parts.push(duration(p.seconds_remaining) + ' left');
    $$('[data-progress-text="' + jobId + '"]').forEach(function (el) { el.textContent = parts.join(' · ') || 'running…'; });
    var facts = {
      percent: pct != null ? pct.toFixed(1) + ' %' : '—',
      files: p.files_done != null ? p.files_done + (p.total_files != null ? ' of ' + p.total_files : '') : '—',
      bytes: p.bytes_done != null ? bytes(p.bytes_done) + (p.total_bytes != null ? ' of ' + bytes(p.total_bytes) : '') : '—',
      rate: rate != null ? bytes(Math.round(rate)) + '/s' : '—',
      eta: p.seconds_remaining != null ? duration(p.seconds_remaining) : '—',
      elapsed: duration((p.elapsed_ms || 0) / 1000),
      current: (p.current_files && p.current_files.length) ? p.current_files[0] : ''
    };
    Object.keys(facts).forEach(function (k) {
      $$('[data-progress-' + k + '="' + jobId + '"]').forEach(function (el) { el.textContent = facts[k]; });
    });
  }

  function onLog(jobId, lines) {
    var pre = doc.querySelector('[data-log="' + jobId + '"]');
    if (!pre || !lines) return;
    var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    lines.forEach(function (l) {
      var span = doc.createElement('span');
      if (l.stream === 'stderr') span.className = 'stderr';
      span.textContent = l.text + '\n';
      pre.appendChild(span);
    });
    while (pre.childNodes.length > 2000) pre.removeChild(pre.firstChild);
    if (stick) pre.scrollTop = pre.scrollHeight;
  }

  // Event shapes: web/src/events.rs (`type` says what happened).
  function handle(name, data) {
    var what = data.type;
    if (name === 'job') {
      if (what === 'progress') { onProgress(data.job_id, data); return; }
      if (what === 'log') { onLog(data.job_id, data.lines); return; }
      hostChanged(data.host_id);
    } else if (name === 'host') {
      if (what === 'vitals') return;
      hostChanged(data.host_id);
    } else if (name === 'alert') {
      // raised, acknowledged, resolved, and `mutes` (a host's mute or
      // maintenance windows changed): the host's row and strip change.
      hostChanged(data.host_id);
    } else {
      refetchSoon();
    }
  }

  // The first connection resumes after the last event the server had
  // published when it rendered this page, so nothing that happened in
  // between (a job finishing) is missed; a new connection after a close
  // resumes after the last event received.
  // A host's, a job's or a repository's page asks for its own events only,
  // not every event of the fleet (web/src/events.rs, Scope).
  var es = null, retry = 1000, lastId = body.getAttribute('data-event-id');
  var scope = '';
  ['host', 'job', 'repo'].forEach(function (k) {
    var v = body.getAttribute('data-event-' + k);
    if (v && !scope) scope = '&' + k + '=' + encodeURIComponent(v);
  });
  // A fleet-wide page asks for the job progress of the hosts it shows
  // progress bars for (the dashboard's rows) or for none (events.rs,
  // OutputOf), not for every job of the fleet; when the dashboard's rows
  // change it connects again for theirs, resuming after its last event.
  var openedWith = '';
  function progressParam() {
    if (!body.hasAttribute('data-event-progress')) return '';
    var hosts = doc.getElementById('fleet') ?
      fleetRows().map(function (tr) { return tr.getAttribute('data-host'); }).join(',') :
      body.getAttribute('data-event-progress');
    return '&progress=' + encodeURIComponent(hosts);
  }
  function rescope() {
    if (es && progressParam() !== openedWith) { es.close(); connect(); }
  }
  function connect() {
    openedWith = progressParam();
    es = new EventSource('/api/v1/events?topics=' + encodeURIComponent(topics) + scope + openedWith +
      (lastId ? '&since=' + encodeURIComponent(lastId) : ''));
    es.onopen = function () { retry = 1000; setLive('live', 'live'); };
    ['job', 'host', 'alert', 'schedule', 'repo', 'refetch'].forEach(function (t) {
      es.addEventListener(t, function (ev) {
        if (ev.lastEventId) lastId = ev.lastEventId;
        var data = {};
        try { data = JSON.parse(ev.data); } catch (err) { return; }
        handle(t, data);
      });
    });
    es.onerror = function () {
      setLive('paused', 'live updates paused — reconnecting');
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(function () { connect(); refetchSoon(); }, retry);
        retry = Math.min(retry * 2, 30000);
      }
    };
  }
  setLive('connecting', 'connecting…');
  connect();
  window.rmLive = { refetch: refetchSoon, progress: onProgress, hostChanged: hostChanged };

})();
