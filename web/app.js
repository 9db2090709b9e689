// camserve web UI: upload an image, see the top classes and the Grad-CAM.
// Plain JavaScript, no build step, no network access beyond this server.
// An image is uploaded once; changing method, layer, class or colormap asks
// again by image_id, and only re-uploads if the server has forgotten it.
'use strict';

const $ = (id) => document.getElementById(id);
const STAGES = [
  ['decode', '#7c3aed'], ['preprocess', '#0891b2'], ['inference', '#2f6fec'],
  ['cam', '#ea580c'], ['encode', '#16a34a'],
];

const state = {
  models: [],
  model: null,      // entry of /v1/models
  file: null,       // the current image as a Blob (kept for re-uploads)
  imageId: null,
  imageUrl: null,   // object URL for the preview / composite
  result: null,
  seq: 0,           // only the latest request may update the page
  inflight: null,   // AbortController of the request under way
  view: 'overlay',
  labelCount: new Map(), // folded label (labelKey) -> how many classes carry it
  classAsked: '',   // the class box's value last explained
};

// "12.3 ms", or "6.42 s" from a second on (ScoreCAM on a real model takes
// seconds, and the timing column has room for about nine characters)
function duration(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

function showError(msg) {
  $('error-text').textContent = msg;
  $('error').hidden = false;
}
function clearError() { $('error').hidden = true; }
$('error-close').addEventListener('click', clearError);

function option(value, text) {
  const o = document.createElement('option');
  o.value = value;
  o.textContent = text;
  return o;
}

function className(i) {
  const m = state.model;
  return m && m.classes && m.classes[i] ? m.classes[i] : `class ${i}`;
}

// A label as the server compares them: case folded, '_' as a space.
const labelKey = (l) => l.toLowerCase().replaceAll('_', ' ');

// What the class box holds for class i: its label, which the server takes
// as well as the index and which a user can type, unless the model has
// none or another class has the same label (the server would refuse it).
function classValue(i) {
  const m = state.model;
  const l = m && m.classes ? m.classes[i] : '';
  return l && state.labelCount.get(labelKey(l)) === 1 ? l : String(i);
}

// ---- models and controls ----------------------------------------------------

async function loadModels() {
  for (let attempt = 0; attempt < 60; attempt++) {
    try {
      const r = await fetch('/v1/models');
      if (r.ok) {
        const data = await r.json();
        state.models = data.models;
        fillStatic(data);
        selectModel(state.models[0].name);
        $('status').className = 'status ok';
        $('status').title = 'ready';
        return;
      }
      $('model-meta').textContent = 'models loading…';
    } catch (e) {
      $('model-meta').textContent = 'server unreachable, retrying…';
      $('status').className = 'status bad';
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
  showError('The server did not become ready. Check that camserve serve is running.');
}

function fillStatic(data) {
  const ms = $('model');
  ms.replaceChildren(...data.models.map((m) => option(m.name, m.name)));
  ms.parentElement.hidden = data.models.length < 2;
  // ScoreCAM runs the whole network once per channel of the layer: seconds
  // on a CPU where the others take milliseconds.  AblationCAM runs only
  // what follows the layer once per channel: quick at the default layer.
  $('method').replaceChildren(...data.methods.map((m) => {
    if (m !== 'scorecam') return option(m, m);
    const o = option(m, `${m} (slow)`);
    o.title = 'runs the whole network once per channel of the layer';
    return o;
  }));
  $('colormap').replaceChildren(...data.colormaps.map((c) => option(c, c)));
}

function selectModel(name) {
  const m = state.models.find((x) => x.name === name) || state.models[0];
  state.model = m;
  const labelled = m.classes && m.classes.length > 0;
  $('model-meta').textContent =
    `${m.name} · ${m.num_classes} classes${labelled ? '' : ' (unlabelled)'} · ` +
    `${m.input.width}×${m.input.height} · ${m.device || 'cpu'} ${m.precision || ''} · sha256 ${m.digest.slice(0, 12)}`;
  $('model-meta').title = `digest ${m.digest}`;
  const layers = m.layers.map((l) => option(l.name, `${l.name}  (${l.shape.join('×')})`));
  $('layer').replaceChildren(option('', `default: ${m.default_layer}`), ...layers);
  // The class is typed (a label or an index) with the labels offered as
  // the user types: a list of 1000 ImageNet classes is no menu to scroll.
  state.labelCount = new Map();
  for (const l of m.classes || []) state.labelCount.set(labelKey(l), (state.labelCount.get(labelKey(l)) || 0) + 1);
  const classes = [];
  for (let i = 0; i < m.num_classes; i++) classes.push(option(classValue(i), `#${i}`));
  $('class-list').replaceChildren(...classes);
  $('class').value = state.classAsked = '';
  $('class').placeholder = labelled ? 'top prediction (or type a label)' : `top prediction (or 0..${m.num_classes - 1})`;
  showGallery();
}

// ---- samples ----------------------------------------------------------------------

// The samples are pictures of the built-in model's classes: another model
// (ImageNet's, say) would call the dog a buckle.  They show only while
// that model is selected; for another, a note says why they are gone.
function showGallery() {
  const has = $('gallery').children.length > 0, fits = !!(state.model && state.model.builtin);
  $('gallery-wrap').hidden = !(has && fits);
  $('gallery-note').hidden = !(has && !fits);
}

// index.json may be ["a.jpg", ...], [{"file": "a.jpg", "label": "..."}, ...]
// or {"samples": [...]}; paths are relative to /samples/.
async function loadSamples() {
  let list;
  try {
    const r = await fetch('/samples/index.json');
    if (!r.ok) return;
    list = await r.json();
  } catch (e) {
    return;
  }
  if (list && !Array.isArray(list)) list = list.samples || list.images || [];
  if (!Array.isArray(list) || list.length === 0) return;
  const g = $('gallery');
  for (const item of list.slice(0, 24)) {
    const file = typeof item === 'string' ? item
      : item.file || item.path || item.src || item.url || item.name;
    if (!file) continue;
    const url = /^(\/|https?:)/.test(file) ? file : `/samples/${file}`;
    const title = typeof item === 'string' ? file : item.label || item.title || item.name || file;
    const b = document.createElement('button');
    b.type = 'button';
    b.title = title;
    b.dataset.url = url;
    const img = document.createElement('img');
    img.src = url;
    img.alt = title;
    img.loading = 'lazy';
    b.appendChild(img);
    b.addEventListener('click', async () => {
      document.querySelectorAll('.gallery button').forEach((x) => x.classList.remove('on'));
      b.classList.add('on');
      try {
        const r = await fetch(url);
        if (!r.ok) throw new Error(`sample not found (${r.status})`);
        setImage(await r.blob());
      } catch (e) {
        showError(`Could not load the sample: ${e.message}`);
      }
    });
    g.appendChild(b);
  }
  showGallery();
}

// ---- image input --------------------------------------------------------------------

// the user's own file: no sample is the current image any more
function setOwnImage(blob) {
  document.querySelectorAll('.gallery button').forEach((x) => x.classList.remove('on'));
  setImage(blob);
}

function setImage(blob) {
  clearError();
  state.file = blob;
  state.imageId = null;
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(blob);
  const p = $('preview');
  p.src = state.imageUrl;
  p.hidden = false;
  $('drop').classList.add('has-image');
  explain();
}

// a file the browser cannot show either: back to the hint, the server's
// answer explains what is wrong
$('preview').addEventListener('error', () => {
  $('preview').hidden = true;
  $('drop').classList.remove('has-image');
});

const drop = $('drop');
$('file').addEventListener('change', (e) => {
  if (e.target.files && e.target.files[0]) setOwnImage(e.target.files[0]);
  e.target.value = '';
});
drop.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); $('file').click(); }
});
['dragenter', 'dragover'].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault();
  drop.classList.add('over');
}));
['dragleave', 'drop'].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault();
  drop.classList.remove('over');
}));
drop.addEventListener('drop', (e) => {
  const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
  if (f) setOwnImage(f);
});
document.addEventListener('paste', (e) => {
  const items = (e.clipboardData && e.clipboardData.items) || [];
  for (const it of items) {
    if (it.kind === 'file' && it.type.startsWith('image/')) {
      setOwnImage(it.getAsFile());
      return;
    }
  }
});

// ---- requests -------------------------------------------------------------------------

function params() {
  const p = { model: state.model ? state.model.name : '', method: $('method').value,
              class: $('class').value.trim() || 'top', colormap: $('colormap').value };
  if ($('layer').value) p.layer = $('layer').value;
  return p;
}

async function request(p, signal) {
  if (state.imageId) {
    const r = await fetch('/v1/explain', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ image_id: state.imageId, ...p }),
      signal,
    });
    if (r.status !== 404) return r;
    state.imageId = null; // the server forgot the image: upload it again
  }
  const q = new URLSearchParams(p).toString();
  return fetch(`/v1/explain?${q}`, {
    method: 'POST',
    headers: { 'Content-Type': state.file.type || 'application/octet-stream' },
    body: state.file,
    signal,
  });
}

async function explain() {
  if (!state.file || !state.model) return;
  const seq = ++state.seq;
  // The answer to the request under way would be dropped (seq): closing it
  // also lets the server stop a long ScoreCAM / AblationCAM run nobody else
  // waits for, instead of holding a worker for it.
  if (state.inflight) state.inflight.abort();
  const inflight = new AbortController();
  state.inflight = inflight;
  $('busy').hidden = false;
  try {
    const r = await request(params(), inflight.signal);
    let body;
    try {
      body = await r.json();
    } catch (e) {
      body = { error: `unexpected answer (HTTP ${r.status})` };
    }
    if (seq !== state.seq) return;
    if (!r.ok) {
      const retry = r.headers.get('Retry-After');
      showError(`${body.error || `HTTP ${r.status}`}${retry ? ` (retry in ${retry} s)` : ''}`);
      if (r.status === 415 || r.status === 413) resetResult();
      return;
    }
    clearError();
    state.imageId = body.image_id;
    render(body);
  } catch (e) {
    if (seq === state.seq) showError(`Request failed: ${e.message}`);
  } finally {
    if (seq === state.seq) $('busy').hidden = true;
    if (state.inflight === inflight) state.inflight = null;
  }
}

// ---- rendering ---------------------------------------------------------------------------

function resetResult() {
  state.result = null;
  $('composite').hidden = true;
  $('side').hidden = true;
  $('empty').hidden = false;
  $('preds').replaceChildren(Object.assign(document.createElement('li'), { className: 'placeholder', textContent: '—' }));
  $('timings').replaceChildren();
  $('total').textContent = '';
  $('image-id').textContent = '';
  $('cam-caption').textContent = '';
  $('cache-badge').hidden = true;
}

function render(res) {
  state.result = res;
  const cam = res.cam;
  $('overlay-img').src = `data:image/png;base64,${cam.overlay_png_base64}`;
  $('heatmap-img').src = `data:image/png;base64,${cam.heatmap_png_base64}`;
  $('heat-layer').src = $('heatmap-img').src;
  // side by side at equal heights: columns in proportion to the aspect ratios
  const ar = (w, h) => (h > 0 ? w / h : 1);
  const [x0, y0, x1, y1] = cam.box || [0, 0, 1, 1];
  const heatAr = ar((x1 - x0) * res.image.width, (y1 - y0) * res.image.height);
  $('side').style.gridTemplateColumns = `${ar(cam.width, cam.height)}fr ${heatAr}fr`;
  $('base-img').src = state.imageUrl;
  $('empty').hidden = true;
  applyView();
  const named = cam.class_label || (state.model.classes || [])[cam.class_index];
  $('cam-caption').textContent =
    `${cam.method} for class ${cam.class_index}${named ? ` (${named})` : ''} at ${cam.layer}`;

  const preds = res.predictions.map((p) => {
    const li = document.createElement('li');
    li.className = 'pred';
    if (p.index === cam.class_index) li.classList.add('selected');
    li.title = 'explain this class';
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = p.label || className(p.index);
    const idx = document.createElement('small');
    idx.textContent = `  #${p.index}`;
    label.appendChild(idx);
    const score = document.createElement('span');
    score.className = 'score';
    score.textContent = `${(p.score * 100).toFixed(1)}%`;
    const bar = document.createElement('div');
    bar.className = 'bar';
    const fill = document.createElement('span');
    fill.style.width = `${Math.max(0.5, p.score * 100)}%`;
    bar.appendChild(fill);
    li.append(label, score, bar);
    li.addEventListener('click', () => {
      $('class').value = state.classAsked = classValue(p.index);
      explain();
    });
    return li;
  });
  $('preds').replaceChildren(...preds);

  const t = res.timings_ms;
  const max = Math.max(1, ...STAGES.map(([k]) => t[k] || 0));
  $('timings').replaceChildren(...STAGES.map(([k, color]) => {
    const row = document.createElement('div');
    row.className = 'timing';
    const n = document.createElement('span');
    n.className = 't-name';
    n.textContent = k;
    const bar = document.createElement('div');
    bar.className = 't-bar';
    const fill = document.createElement('span');
    fill.style.width = `${((t[k] || 0) / max) * 100}%`;
    fill.style.background = color;
    bar.appendChild(fill);
    const ms = document.createElement('span');
    ms.className = 't-ms';
    ms.textContent = duration(t[k] || 0);
    row.append(n, bar, ms);
    return row;
  }));
  $('total').textContent = `total ${duration(t.total)} on the server` +
    (res.cache === 'hit' ? ' (answered from the cache)' : '');
  const badge = $('cache-badge');
  badge.hidden = false;
  badge.textContent = res.cache === 'hit' ? 'cache hit' : 'cache miss';
  badge.className = `badge ${res.cache}`;
  $('image-id').textContent = `image_id ${res.image_id} · ${res.image.width}×${res.image.height}`;
}

// The overlay view lays the heatmap over the model's crop window of the
// picture, so the opacity slider works without asking the server again.
function placeHeat() {
  const res = state.result;
  const base = $('base-img');
  if (!res || !base.complete || !base.naturalWidth) return;
  const [x0, y0, x1, y1] = res.cam.box || [0, 0, 1, 1];
  const w = base.clientWidth, h = base.clientHeight;
  const heat = $('heat-layer');
  heat.style.left = `${x0 * w}px`;
  heat.style.top = `${y0 * h}px`;
  heat.style.width = `${(x1 - x0) * w}px`;
  heat.style.height = `${(y1 - y0) * h}px`;
  heat.style.opacity = $('opacity').value;
}
$('base-img').addEventListener('load', placeHeat);
window.addEventListener('resize', placeHeat);

function applyView() {
  if (!state.result) return;
  const overlay = state.view === 'overlay';
  $('composite').hidden = !overlay;
  $('side').hidden = overlay;
  $('view-overlay').classList.toggle('on', overlay);
  $('view-side').classList.toggle('on', !overlay);
  $('opacity-row').style.visibility = overlay ? 'visible' : 'hidden';
  placeHeat();
}
$('view-overlay').addEventListener('click', () => { state.view = 'overlay'; applyView(); });
$('view-side').addEventListener('click', () => { state.view = 'side'; applyView(); });
$('opacity').addEventListener('input', () => {
  $('opacity-value').textContent = `${Math.round($('opacity').value * 100)}%`;
  $('heat-layer').style.opacity = $('opacity').value;
});

['method', 'layer', 'colormap'].forEach((id) => $(id).addEventListener('change', explain));
// A suggestion picked from the class list explains at once; typed text
// waits for Enter or leaving the box ('change'), so that typing "crane"
// does not run a ScoreCAM for "cr".  Either asks once per value.
function classChanged() {
  if ($('class').value === state.classAsked) return;
  state.classAsked = $('class').value;
  explain();
}
$('class').addEventListener('change', classChanged);
$('class').addEventListener('input', (e) => { if (e.inputType === 'insertReplacementText' || !e.inputType) classChanged(); });
$('model').addEventListener('change', () => {
  selectModel($('model').value);
  explain();
});

loadModels();
loadSamples();
