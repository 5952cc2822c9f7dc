'use strict';
// The relay's page: log in (POST /login, a short-lived bearer token kept in
// sessionStorage), list the cameras this user may see (GET /api/cameras),
// and play one through WHEP: POST /whep/<camera> with an SDP offer, the
// answer back, DELETE on the session URL to stop. No build step.

const $ = (sel, el = document) => el.querySelector(sel);
let token = sessionStorage.getItem('token') || '';
const players = new Map(); // camera name -> {card, pc, location}

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: 'Bearer ' + token } : extra;
}

async function login(ev) {
  ev.preventDefault();
  const form = ev.target;
  $('#login-error').textContent = '';
  const res = await fetch('/login', { method: 'POST', body: new URLSearchParams(new FormData(form)) });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    $('#login-error').textContent = body.error || ('login failed: HTTP ' + res.status);
    return;
  }
  form.reset();
  setToken(body.token, body.ttlSeconds);
  await refreshCameras();
}

function setToken(t, ttl) {
  token = t;
  sessionStorage.setItem('token', t);
  if (ttl) {
    // Renew at half-life, while the page is open.
    clearTimeout(setToken.timer);
    setToken.timer = setTimeout(renew, ttl * 500);
  }
}

async function renew() {
  const res = await fetch('/api/token', { method: 'POST', headers: authHeaders() });
  if (res.ok) {
    const body = await res.json();
    setToken(body.token, body.ttlSeconds);
  }
}

function logout() {
  token = '';
  sessionStorage.removeItem('token');
  for (const name of players.keys()) stop(name);
  $('#cameras').replaceChildren();
  players.clear();
  refreshCameras();
}

async function refreshCameras() {
  const res = await fetch('/api/cameras', { headers: authHeaders() });
  if (res.status === 401) {
    token = '';
    sessionStorage.removeItem('token');
  }
  const body = res.ok ? await res.json() : { user: '', cameras: [] };
  const loggedIn = !!body.user;
  $('#login').hidden = loggedIn;
  $('#logout').hidden = !loggedIn;
  $('#who').hidden = !loggedIn;
  $('#who').textContent = body.user;
  $('#empty').hidden = !loggedIn || body.cameras.length > 0;
  for (const cam of body.cameras) render(cam);
}

function render(cam) {
  let p = players.get(cam.name);
  if (!p) {
    const card = $('#camera').content.firstElementChild.cloneNode(true);
    card.dataset.camera = cam.name;
    $('.name', card).textContent = cam.name;
    $('.play', card).addEventListener('click', () => play(cam.name));
    $('.stop', card).addEventListener('click', () => stop(cam.name));
    $('#cameras').append(card);
    p = { card, pc: null, location: '' };
    players.set(cam.name, p);
  }
  $('.viewers', p.card).textContent = cam.viewers;
  if (!cam.playable) {
    setState(p, 'unplayable', cam.reason);
    $('.play', p.card).disabled = true;
    return;
  }
  if (p.pc) return; // the player's own state wins while it plays
  if (cam.state === 'idle' && cam.reason) setState(p, 'offline', 'camera offline: ' + cam.reason);
  else setState(p, cam.state, '');
}

function setState(p, state, message) {
  const el = $('.state', p.card);
  el.textContent = state;
  el.className = 'state ' + state;
  p.card.dataset.state = state;
  $('.message', p.card).textContent = message || '';
}

async function play(name) {
  const p = players.get(name);
  if (p.pc) return;
  const video = $('video', p.card);
  const pc = new RTCPeerConnection();
  p.pc = pc;
  $('.play', p.card).hidden = true;
  $('.stop', p.card).hidden = false;
  setState(p, 'connecting', '');
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.ontrack = (ev) => { video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed' && p.pc === pc) fail(name, 'connection failed (UDP and TCP to the relay blocked? a TURN server helps)');
  };
  video.onplaying = () => { if (p.pc === pc) setState(p, 'live', ''); };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 2000);
    const res = await fetch('/whep/' + encodeURIComponent(name), {
      method: 'POST',
      headers: authHeaders({ 'Content-Type': 'application/sdp' }),
      body: pc.localDescription.sdp,
    });
    if (!res.ok) {
      const text = (await res.text()).trim();
      if (res.status === 401) { logout(); return; }
      fail(name, text || ('HTTP ' + res.status), res.status === 422 ? 'unplayable' : 'offline');
      return;
    }
    p.location = res.headers.get('Location') || '';
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  } catch (err) {
    fail(name, String(err));
  }
}

// gathered waits for ICE gathering (the relay does not take trickled
// candidates), at most ms.
function gathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}

function fail(name, message, state = 'offline') {
  stop(name);
  const p = players.get(name);
  setState(p, state, message);
}

function stop(name) {
  const p = players.get(name);
  if (!p || !p.pc) return;
  p.pc.close();
  p.pc = null;
  if (p.location) {
    // keepalive: the request outlives a closing page.
    fetch(p.location, { method: 'DELETE', headers: authHeaders(), keepalive: true }).catch(() => {});
    p.location = '';
  }
  const video = $('video', p.card);
  video.srcObject = null;
  $('.play', p.card).hidden = false;
  $('.stop', p.card).hidden = true;
  setState(p, 'idle', '');
}

$('#login').addEventListener('submit', login);
$('#logout').addEventListener('click', logout);
window.addEventListener('pagehide', () => { for (const name of players.keys()) stop(name); });
refreshCameras();
setInterval(refreshCameras, 2000);
if (token) renew();
