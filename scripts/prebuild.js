#!/usr/bin/env node
// `npm run prebuild`: the prebuilt binaries that ship in the npm tarball.
//
//   prebuilds/<platform>-<arch>/resnext.glibc.node    the CPU addon, N-API (one binary for every
//                                                      Node version with N-API >= 8), stripped,
//                                                      built by prebuildify + node-gyp from binding.gyp
//   prebuilds/<platform>-<arch>/libresnext_cuda.so    the CUDA backend (Linux), copied from
//                                                      build-cuda/ when it has been built there
//                                                      (`npm run build:cuda`, `bash scripts/ci-cuda.sh`)
//
// node-gyp-build finds the addon at run time (lib/native/addon.ts), so nothing depends on an
// install script having run; lib/native/cuda.ts looks for the CUDA library beside the addon.
//
// The addon is compiled in a temporary staging folder, never in build/: node-gyp's `rebuild`
// wipes its build/ folder, and build/ here belongs to the cmake-js source build.
// Node's headers come from the running Node's own prefix (<prefix>/include/node, present in the
// official tarballs and the distribution packages) so the build needs no download; set
// npm_config_nodedir to use others.
//
// Options:
//   --if-stale        do nothing when the prebuild is newer than binding.gyp and every native source
//   --no-cuda         do not copy the CUDA library
//   --cuda-package    also write the optional per-platform package @resnext/cuda-<platform>-<arch>
//                     to build-cuda/npm/cuda-<platform>-<arch>/ (publish it with `npm publish` there)
//   --quiet           less output
// Environment: RESNEXT_CUDA_LIBRARY (the CUDA library to ship, default build-cuda/libresnext_cuda.so).

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = new Set(process.argv.slice(2));
for (const a of args)
  if (!['--if-stale', '--no-cuda', '--cuda-package', '--quiet'].includes(a)) die(`unknown option ${a} (see the top of scripts/prebuild.js)`);
const quiet = args.has('--quiet');
const tuple = `${process.platform}-${process.arch}`;
const outDir = path.join(root, 'prebuilds', tuple);
const addonOut = path.join(outDir, `resnext${process.platform === 'linux' ? `.${fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc'}` : ''}.node`);
const CUDA_LIB = 'libresnext_cuda.so';

function log(msg) {
  if (!quiet) console.log(`prebuild: ${msg}`);
}
function die(msg) {
  console.error(`prebuild: ${msg}`);
  process.exit(1);
}

/** binding.gyp and every file it and its sources may include. */
function nativeInputs() {
  const files = [path.join(root, 'binding.gyp')];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (!['cuda', 'gloo', 'nccl'].includes(e.name)) walk(p); // the CUDA backend and the collectives are separate libraries
      } else files.push(p);
    }
  };
  walk(path.join(root, 'native'));
  return files;
}

function isStale() {
  if (!fs.existsSync(addonOut)) return true;
  const built = fs.statSync(addonOut).mtimeMs;
  return nativeInputs().some((f) => fs.statSync(f).mtimeMs > built);
}

function resolveTool(request) {
  const paths = [root, ...(process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean)];
  try {
    return require.resolve(request, { paths });
  } catch {
    return null;
  }
}

function buildAddon() {
  const prebuildify = resolveTool('prebuildify/bin.js');
  const nodeGyp = resolveTool('node-gyp/bin/node-gyp.js');
  if (!prebuildify) die('prebuildify is not installed: npm install --save-dev prebuildify');
  if (!nodeGyp) die('node-gyp is not installed: npm install --save-dev node-gyp (prebuildify runs it)');

  // Staging: binding.gyp and native/ linked, package.json copied (prebuildify reads the name),
  // node_modules linked so binding.gyp's `require('node-addon-api')` resolves.
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'resnext-prebuild-'));
  process.on('exit', () => fs.rmSync(stage, { recursive: true, force: true })); // die() exits past finally
  try {
    fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(stage, 'binding.gyp'));
    fs.copyFileSync(path.join(root, 'package.json'), path.join(stage, 'package.json'));
    // binding.gyp computes the backend ABI with scripts/abi-hash.js (from native/core's headers).
    fs.mkdirSync(path.join(stage, 'scripts'));
    fs.copyFileSync(path.join(root, 'scripts', 'abi-hash.js'), path.join(stage, 'scripts', 'abi-hash.js'));
    fs.symlinkSync(path.join(root, 'native'), path.join(stage, 'native'), 'dir');
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(stage, 'node_modules'), 'dir');

    const env = { ...process.env };
    // npm sets npm_config_node_gyp to its bundled copy for scripts; we pass ours explicitly.
    delete env.npm_config_node_gyp;
    if (!env.npm_config_nodedir) {
      const prefixes = [path.resolve(path.dirname(fs.realpathSync(process.execPath)), '..'), process.config.variables.node_prefix].filter(Boolean);
      const prefix = prefixes.find((p) => ['node_api.h', 'common.gypi'].every((f) => fs.existsSync(path.join(p, 'include', 'node', f))));
      if (prefix) {
        env.npm_config_nodedir = prefix;
        log(`Node headers from ${path.join(prefix, 'include', 'node')}`);
      } else log(`no headers under ${prefixes.join(' or ')}/include/node: node-gyp will download them (set npm_config_nodedir to avoid that)`);
    }
    if (!env.JOBS) env.JOBS = String(Math.max(1, os.cpus().length)); // node-gyp: parallel make
    const argv = [
      prebuildify,
      '--napi',
      '--strip',
      '--tag-libc', // resnext.glibc.node: never picked on musl (Alpine), which falls back to a source build
      `--target=node@${process.versions.node}`, // N-API: the binary serves every Node >= 20 (NAPI_VERSION=8)
      `--cwd=${stage}`,
      `--out=${stage}`, // then moved into prebuilds/ in one rename, so readers never see it missing
      `--node-gyp=${nodeGyp}`,
      `--cache=${path.join(os.tmpdir(), 'resnext-prebuildify-cache')}`,
    ];
    if (quiet) argv.push('--quiet');
    log(`node ${argv.map((a) => path.relative(root, a) || a).join(' ')}`);
    const t0 = Date.now();
    const r = spawnSync(process.execPath, argv, { stdio: 'inherit', env, cwd: stage });
    if (r.error) die(`prebuildify could not run: ${r.error.message}`);
    if (r.status !== 0) die(`prebuildify failed with exit code ${r.status} (see the output above)`);
    log(`built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    const builtDir = path.join(stage, 'prebuilds', tuple);
    const produced = fs.existsSync(builtDir) ? fs.readdirSync(builtDir).filter((f) => f.endsWith('.node')) : [];
    if (produced.length !== 1) die(`prebuildify finished but ${builtDir} holds ${produced.length} .node files (${produced.join(', ')})`);
    fs.mkdirSync(outDir, { recursive: true });
    const dest = path.join(outDir, produced[0]);
    const tmp = `${dest}.tmp-${process.pid}`;
    fs.copyFileSync(path.join(builtDir, produced[0]), tmp);
    fs.renameSync(tmp, dest);
    // Earlier prebuilds of this platform with other tags go: node-gyp-build would choose among them.
    for (const f of fs.readdirSync(outDir)) if (f.endsWith('.node') && f !== produced[0]) fs.rmSync(path.join(outDir, f));
    log(`${path.relative(root, dest)}`);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

/** Loads the prebuild in a fresh process exactly as the package does (node-gyp-build from the package root, minus build/). */
function checkAddon() {
  const file = fs.readdirSync(outDir).find((f) => f.endsWith('.node'));
  const full = path.join(outDir, file);
  const script = `const a = require(${JSON.stringify(full)}); const f = a.cpuFeatures(); process.stdout.write(JSON.stringify(f));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  if (r.status !== 0) die(`${full} does not load: ${r.stderr.trim()}`);
  if (process.platform === 'linux') {
    const d = spawnSync('readelf', ['-d', '-V', full], { encoding: 'utf8' });
    if (d.status === 0) {
      const needed = [...d.stdout.matchAll(/\(NEEDED\).*\[(.*)\]/g)].map((m) => m[1]);
      if (needed.some((n) => /cuda|cudnn|cublas/i.test(n))) die(`${full} links a CUDA library (${needed.join(', ')}); the CPU addon must not`);
      const glibc = [...d.stdout.matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [+m[1], +m[2]]);
      const max = glibc.reduce((a, b) => (b[0] > a[0] || (b[0] === a[0] && b[1] > a[1]) ? b : a), [0, 0]);
      log(`${path.relative(root, full)}: ${fs.statSync(full).size} bytes, needs ${needed.join(', ')}; glibc >= ${max.join('.')}; cpuFeatures ${r.stdout}`);
    }
  }
}

// ------------------------------------------------------------------ the CUDA flavour

/**
 * Rewrites DT_RUNPATH/DT_RPATH of an ELF64 little-endian shared library in place, as chrpath
 * does: the new string must not be longer than the old one. Returns the old value, or null when
 * the library has none.
 */
function rewriteRunpath(file, decide) {
  const buf = fs.readFileSync(file);
  if (buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2 || buf[5] !== 1) return null; // not ELF64 LE
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  const loads = [];
  let dyn = null;
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    const type = buf.readUInt32LE(o);
    const seg = { offset: Number(buf.readBigUInt64LE(o + 8)), vaddr: Number(buf.readBigUInt64LE(o + 16)), filesz: Number(buf.readBigUInt64LE(o + 32)) };
    if (type === 1) loads.push(seg);
    if (type === 2) dyn = seg;
  }
  if (!dyn) return null;
  const toOffset = (vaddr) => {
    const s = loads.find((l) => vaddr >= l.vaddr && vaddr < l.vaddr + l.filesz);
    return s ? vaddr - s.vaddr + s.offset : -1;
  };
  let strtab = -1;
  const paths = [];
  for (let o = dyn.offset; o + 16 <= dyn.offset + dyn.filesz; o += 16) {
    const tag = Number(buf.readBigInt64LE(o));
    const val = Number(buf.readBigUInt64LE(o + 8));
    if (tag === 0) break;
    if (tag === 5) strtab = toOffset(val);
    if (tag === 15 || tag === 29) paths.push(val); // DT_RPATH, DT_RUNPATH
  }
  if (strtab < 0 || !paths.length) return null;
  const at = strtab + paths[0];
  const end = buf.indexOf(0, at);
  const old = buf.toString('utf8', at, end);
  const next = decide(old);
  if (next === old) return old;
  if (Buffer.byteLength(next) > end - at) {
    log(`keeping RUNPATH ${old}: the replacement ${next} is longer`);
    return old;
  }
  buf.fill(0, at, end);
  buf.write(next, at, 'utf8');
  fs.writeFileSync(file, buf);
  return old;
}

function copyCuda() {
  if (process.platform !== 'linux') return null;
  const src = path.resolve(process.env.RESNEXT_CUDA_LIBRARY || path.join(root, 'build-cuda', CUDA_LIB));
  const dest = path.join(outDir, CUDA_LIB);
  if (!fs.existsSync(src)) {
    // One placed there by hand (a GPU builder's artifact) stays; delete it for a CPU-only tarball.
    if (fs.existsSync(dest)) log(`no CUDA library at ${src}; keeping the one in ${path.relative(root, dest)}`);
    else log(`no CUDA library at ${src}: the prebuild is CPU-only (build it with \`npm run build:cuda\` or \`bash scripts/ci-cuda.sh\`)`);
    return fs.existsSync(dest) ? dest : null;
  }
  if (fs.existsSync(dest) && fs.statSync(dest).mtimeMs >= fs.statSync(src).mtimeMs) {
    log(`${path.relative(root, dest)} is up to date with ${path.relative(root, src)}`);
    return dest;
  }
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.copyFileSync(src, tmp);
  // The build records where it found cuDNN/cuBLAS (RUNPATH); directories inside this checkout or
  // a Python environment mean nothing on a user's machine, so they go, system ones (e.g.
  // /usr/local/cuda/lib64) stay, and $ORIGIN lets a folder beside the library serve as well.
  const old = rewriteRunpath(tmp, (rp) => {
    const keep = rp.split(':').filter((d) => d && !d.startsWith(root) && !/site-packages|dist-packages|\/\.cache\//.test(d) && d !== '$ORIGIN');
    return ['$ORIGIN', ...keep].join(':');
  });
  fs.renameSync(tmp, dest);
  const size = fs.statSync(dest).size;
  log(`copied ${path.relative(root, src)} to ${path.relative(root, dest)} (${(size / 1e6).toFixed(1)} MB)` + (old !== null ? `; RUNPATH ${old} -> ${readRunpath(dest)}` : ''));
  return dest;
}

function readRunpath(file) {
  return rewriteRunpath(file, (x) => x);
}

function writeCudaPackage(lib) {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const name = `@resnext/cuda-${tuple}`;
  const dir = path.join(root, 'build-cuda', 'npm', `cuda-${tuple}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(lib, path.join(dir, CUDA_LIB));
  const meta = {
    name,
    version: pkg.version,
    description: `The CUDA backend of resnext ${pkg.version} for ${tuple} (needs the NVIDIA driver, cuDNN 9 and cuBLAS for CUDA 13 at run time).`,
    license: pkg.license,
    os: [process.platform],
    cpu: [process.arch],
    files: [CUDA_LIB],
    resnext: { library: CUDA_LIB },
  };
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(meta, null, 2)}\n`);
  fs.writeFileSync(
    path.join(dir, 'README.md'),
    `# ${name}\n\nThe prebuilt CUDA backend of [resnext](https://www.npmjs.com/package/resnext) ${pkg.version} for ${tuple}.\n` +
      'Install it beside resnext (`npm install resnext ' + name + '`); resnext finds it with `require.resolve`.\n' +
      'It needs the NVIDIA driver (R580 or newer), cuDNN 9 (`libcudnn.so.9`) and cuBLAS for CUDA 13 (`libcublas.so.13`) on the\n' +
      "dynamic loader's path; `npx resnext doctor` says what is missing.\n",
  );
  log(`wrote the optional package ${name} to ${path.relative(root, dir)} (npm publish there)`);
}

// ------------------------------------------------------------------ main

if (args.has('--if-stale') && !isStale()) {
  log(`${path.relative(root, addonOut)} is up to date`);
} else {
  buildAddon();
}
checkAddon();
if (!args.has('--no-cuda')) {
  const lib = copyCuda();
  if (lib && args.has('--cuda-package')) writeCudaPackage(lib);
}
