#!/usr/bin/env node
// ONNX Runtime peer for camserve's benchmark (onnxruntime-node, CPU EP).
//
//   node bench/peer_ort.js bench/.peer/resnet50.onnx --iters 20 --threads 2 [--warmup 3]
//        [--input bench/.peer/input.npy] [--opt all|extended|basic|disabled]
//
// Times session.run at batch 1 (intraOpNumThreads = T, interOpNumThreads = 1,
// sequential execution, graph optimisation level 'all' by default) and prints
// one JSON line. Install once with: (cd bench && npm install --ignore-scripts)
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const a = {iters: 20, warmup: 3, threads: require('os').cpus().length, opt: 'all', input: null, model: null};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${k}`);
      return argv[++i];
    };
    if (k === '--iters') a.iters = parseInt(next(), 10);
    else if (k === '--warmup') a.warmup = parseInt(next(), 10);
    else if (k === '--threads') a.threads = parseInt(next(), 10);
    else if (k === '--input') a.input = next();
    else if (k === '--opt') a.opt = next();
    else if (k.startsWith('--')) throw new Error(`unknown option ${k}`);
    else a.model = k;
  }
  if (!a.model) throw new Error('usage: peer_ort.js MODEL.onnx [--iters N] [--threads T] [--warmup W] [--input X.npy]');
  return a;
}

// Minimal .npy reader: little-endian float32, C order.
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const hlen = major >= 2 ? buf.readUInt32LE(8) : buf.readUInt16LE(8);
  const hoff = major >= 2 ? 12 : 10;
  const header = buf.toString('latin1', hoff, hoff + hlen);
  if (!/'descr':\s*'<f4'/.test(header)) throw new Error(`${file}: need '<f4', header ${header}`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: Fortran order not supported`);
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').map(s => s.trim()).filter(Boolean).map(Number);
  const start = hoff + hlen;
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + buf.length));
  return {shape, data};
}

function stats(ms) {
  const s = [...ms].sort((x, y) => x - y);
  const n = s.length;
  const med = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  const r = v => Math.round(v * 1000) / 1000;
  return {median_ms: r(med), min_ms: r(s[0]), max_ms: r(s[n - 1])};
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const t0 = process.hrtime.bigint();
  const sess = await ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: a.opt,
  });
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const inName = sess.inputNames[0];
  const outName = sess.outputNames[0];
  let x;
  const inputPath = a.input || path.join(path.dirname(a.model), 'input.npy');
  if (fs.existsSync(inputPath)) {
    x = readNpy(inputPath);
  } else {
    x = {shape: [1, 3, 224, 224], data: new Float32Array(3 * 224 * 224).fill(0.5)};
  }
  const feeds = {[inName]: new ort.Tensor('float32', x.data, x.shape)};
  let out;
  for (let i = 0; i < a.warmup; i++) out = await sess.run(feeds);
  const ms = [];
  for (let i = 0; i < a.iters; i++) {
    const t = process.hrtime.bigint();
    out = await sess.run(feeds);
    ms.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  const logits = out[outName].data;
  let top1 = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[top1]) top1 = i;
  console.log(JSON.stringify({
    peer: 'ort', model: path.basename(a.model, '.onnx'), threads: a.threads, iters: a.iters,
    warmup: a.warmup, input_shape: x.shape, ort: ort.env.versions ? ort.env.versions.node : null,
    graph_optimization: a.opt, load_ms: Math.round(loadMs * 10) / 10, top1,
    stages: {forward: stats(ms)},
  }));
}

main().catch(e => { console.error(`peer_ort: ${e.message || e}`); process.exit(1); });
