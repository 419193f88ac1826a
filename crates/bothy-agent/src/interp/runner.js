// bothy Node.js runner: one long-lived interpreter of a JavaScript or TypeScript context.
//
// Written into the sandbox by the agent and started as `node runner.js`. Protocol (one JSON
// object per line): requests {"id", "code", "wrapped"} arrive on fd 3 (the agent has already
// transpiled TypeScript and rewritten the cell, see transpile.rs); events leave on fd 4:
//   {"t":"ready"}  {"t":"out"|"err","s":text}  {"t":"result","r":{text,json,...}}
//   {"t":"error","name","value","traceback"}  {"t":"started","id"}  {"t":"done","id"}
// Cells run in one persistent `vm` context. SIGINT interrupts a cell: synchronous code through
// `breakOnSigint`, a pending `await` by rejecting the run.
'use strict';
const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');
const vm = require('vm');
const { EventEmitter } = require('events');
const { createRequire } = require('module');

const EVT = 4;

function send(msg) {
  const buf = Buffer.from(JSON.stringify(msg) + '\n');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(EVT, buf, off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
    }
  }
}

function chunkText(chunk, encoding) {
  if (typeof chunk === 'string') return chunk;
  return Buffer.from(chunk).toString(typeof encoding === 'string' ? encoding : 'utf8');
}

// A stream-like sink for console.Console: every write is an event, synchronously, so output
// and results keep their order.
function sink(tag) {
  const s = new EventEmitter();
  s.write = (chunk, encoding, cb) => {
    const text = chunkText(chunk, encoding);
    if (text) send({ t: tag, s: text });
    if (typeof encoding === 'function') encoding();
    else if (typeof cb === 'function') cb();
    return true;
  };
  s.isTTY = false;
  return s;
}
const outSink = sink('out');
const errSink = sink('err');
// Writes by libraries through process.stdout/stderr are events too; fd 1 and 2 stay raw
// (child processes).
process.stdout.write = outSink.write;
process.stderr.write = errSink.write;
const userConsole = new console.Console({ stdout: outSink, stderr: errSink, colorMode: false });

const T = util.types;
function jsonable(v) {
  if (v === null || typeof v !== 'object') return false;
  if (T.isMap(v) || T.isSet(v) || T.isPromise(v) || T.isNativeError(v) || T.isDate(v) ||
      T.isRegExp(v) || T.isTypedArray(v) || T.isArrayBuffer(v) || T.isWeakMap(v) ||
      T.isWeakSet(v) || T.isProxy(v)) return false;
  return true;
}

function formats(v) {
  const r = { text: util.inspect(v, { depth: 6, colors: false, maxArrayLength: 200 }) };
  if (jsonable(v)) {
    try {
      const s = JSON.stringify(v);
      if (s !== undefined) r.json = JSON.parse(s);
    } catch (_) { /* circular or BigInt: text only */ }
  }
  // Objects may offer other representations, as in Python's `_repr_html_` and friends.
  if (v !== null && (typeof v === 'object' || typeof v === 'function')) {
    for (const [m, k] of [['_repr_html_', 'html'], ['_repr_markdown_', 'markdown'],
      ['_repr_svg_', 'svg'], ['_repr_png_', 'png'], ['_repr_jpeg_', 'jpeg'],
      ['_repr_latex_', 'latex']]) {
      try {
        if (typeof v[m] === 'function') {
          let x = v[m]();
          if (x == null) continue;
          if ((k === 'png' || k === 'jpeg') && typeof x !== 'string') x = Buffer.from(x).toString('base64');
          r[k] = String(x);
        }
      } catch (_) { /* a failing representation is left out */ }
    }
  }
  return r;
}

function display(...values) {
  for (const v of values) {
    const r = formats(v);
    r.is_main_result = false;
    send({ t: 'result', r });
  }
}

const RUNNER = __filename;
function cleanStack(stack) {
  return String(stack)
    .split('\n')
    .filter((l) => !l.includes(RUNNER) && !l.includes('node:internal') && !l.includes('node:vm'))
    .join('\n');
}

function report(e) {
  let name = 'Error';
  let value = String(e);
  let traceback = value;
  if (e !== null && typeof e === 'object') {
    name = typeof e.name === 'string' ? e.name : (e.constructor && e.constructor.name) || 'Error';
    value = typeof e.message === 'string' ? e.message : util.inspect(e);
    traceback = typeof e.stack === 'string' ? cleanStack(e.stack) : `${name}: ${value}`;
  } else {
    name = 'Uncaught';
    value = util.inspect(e);
    traceback = `Uncaught ${value}`;
  }
  send({ t: 'error', name, value, traceback: traceback.endsWith('\n') ? traceback : traceback + '\n' });
}

const cwd = process.cwd();
const sandbox = {
  console: userConsole,
  display,
  require: createRequire(path.join(cwd, '[cell]')),
  module: { exports: {} },
  __filename: path.join(cwd, '[cell]'),
  __dirname: cwd,
  process,
  Buffer,
};
sandbox.exports = sandbox.module.exports;
for (const k of ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate',
  'clearImmediate', 'queueMicrotask', 'structuredClone', 'URL', 'URLSearchParams', 'TextEncoder',
  'TextDecoder', 'AbortController', 'AbortSignal', 'Event', 'EventTarget', 'MessageChannel',
  'MessagePort', 'BroadcastChannel', 'Blob', 'atob', 'btoa', 'performance', 'fetch', 'Headers',
  'Request', 'Response', 'FormData', 'crypto', 'WebSocket']) {
  if (globalThis[k] !== undefined) sandbox[k] = globalThis[k];
}
const context = vm.createContext(sandbox, { name: 'bothy' });

class InterruptedError extends Error {
  constructor() {
    super('interrupted');
    this.name = 'KeyboardInterrupt';
  }
}

let current = null;
let count = 0;
// SIGINT while a cell awaits: reject the run. (While a cell runs synchronously, breakOnSigint
// turns the signal into an exception instead; between cells it is ignored.)
process.on('SIGINT', () => {
  if (current) current.interrupt();
});
// A rejected promise nobody awaits must not end the context: report it as output.
process.on('unhandledRejection', (reason) => {
  send({ t: 'err', s: `Unhandled promise rejection: ${cleanStack(reason && reason.stack ? reason.stack : util.inspect(reason))}\n` });
});
process.on('uncaughtException', (e) => {
  send({ t: 'err', s: `Uncaught exception: ${cleanStack(e && e.stack ? e.stack : util.inspect(e))}\n` });
});

async function runCell(req) {
  count += 1;
  let interruptRun;
  const interrupted = new Promise((_, reject) => { interruptRun = reject; });
  interrupted.catch(() => {});
  current = { interrupt: () => interruptRun(new InterruptedError()) };
  // The agent sends SIGINT only after this line, so an early interrupt is never lost.
  send({ t: 'started', id: req.id });
  try {
    const script = new vm.Script(req.code, { filename: `cell-${count}.js` });
    let value = script.runInContext(context, { breakOnSigint: true, displayErrors: false });
    if (req.wrapped) value = await Promise.race([value, interrupted]);
    if (value !== undefined) {
      const r = formats(value);
      r.is_main_result = true;
      send({ t: 'result', r });
    }
  } catch (e) {
    if (e && e.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') report(new InterruptedError());
    else report(e);
  } finally {
    current = null;
  }
  send({ t: 'done', id: req.id });
}

// Requests are handled one at a time, in order.
let queue = Promise.resolve();
let pending = '';
const ctl = new net.Socket({ fd: 3, readable: true, writable: false });
ctl.setEncoding('utf8');
ctl.on('data', (data) => {
  pending += data;
  let nl;
  while ((nl = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    const req = JSON.parse(line);
    queue = queue.then(() => runCell(req));
  }
});
ctl.on('end', () => process.exit(0));
send({ t: 'ready', pid: process.pid });
