/**
 * The npm tarball installs and runs without a compiler (issue 7, README "Install").
 *
 * `npm pack`, then `npm install <tarball>` into an empty project in a temporary folder with a
 * PATH that holds only node, npm and sh (no cc, gcc, g++, c++, cmake, make), once with the install
 * script and once with --ignore-scripts (recent npm versions skip dependencies' install scripts
 * until approved). In each install: a small ResNeXt runs forward and backward, the addon is the
 * prebuild from prebuilds/ and no build/ folder appears. In the first: `resnext doctor --json`
 * (without a GPU: CUDA unavailable, with a reason) and device 'cuda' without a GPU gives
 * ERR_DEVICE.
 *
 * Needs dist/ (`npm run build:ts`; `npm test` builds it) and the prebuild (`npm run prebuild`):
 * the test runs `node scripts/prebuild.js --if-stale`, which does nothing when the prebuild is
 * newer than binding.gyp and native/ (else it needs prebuildify and node-gyp, about a minute).
 * The tarball's dependencies come from the npm cache or the registry (--prefer-offline).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const tuple = `${process.platform}-${process.arch}`;
const TOOLS = ['cc', 'gcc', 'g++', 'c++', 'clang', 'clang++', 'cmake', 'make', 'ninja'];
const MAX_PACKED_BYTES = 15e6;

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: { path: string; size: number }[];
}

let tmp: string;
let pack: PackResult;
let tarball: string;
let env: NodeJS.ProcessEnv;
let binDir: string;

/** What npm needs from the caller's environment (cache, registry, proxies), nothing else. */
function cleanEnv(pathValue: string): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { PATH: pathValue, HOME: os.homedir(), TMPDIR: os.tmpdir(), LANG: 'C.UTF-8', CI: '1' };
  for (const [k, v] of Object.entries(process.env))
    if (/^(npm_config_(registry|cache|userconfig|globalconfig|proxy|https_proxy|noproxy|strict_ssl|cafile)|https?_proxy|no_proxy|HTTPS?_PROXY|NO_PROXY)$/.test(k)) e[k] = v;
  // The cache npm uses here, so the tarball's dependencies come from it when they can.
  e.npm_config_cache ??= execFileSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).trim();
  return e;
}

function which(cmd: string, pathValue: string): string | null {
  for (const d of pathValue.split(path.delimiter)) {
    const p = path.join(d, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* not here */
    }
  }
  return null;
}

function npm(args: string[], cwd: string): string {
  const r = spawnSync(path.join(binDir, 'npm'), args, { cwd, env, encoding: 'utf8', timeout: 300000 });
  if (r.status !== 0) throw new Error(`npm ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** An empty project with the tarball installed; returns the project folder. */
function install(name: string, extra: string[]): { dir: string; log: string } {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `resnext-pack-${name}`, version: '1.0.0', private: true }));
  const log = npm(['install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', ...extra, tarball], dir);
  return { dir, log };
}

const CHECK = `
const rx = require('resnext');
const out = { addonPath: rx.addonPath };
rx.manualSeed(0);
const model = rx.models.resnext29({ cardinality: 2, width: 2, stemChannels: 8, stageChannels: [16, 32, 64] });
const loss = rx.crossEntropy(model.call(rx.randn([2, 3, 16, 16])), [0, 1]);
loss.backward();
const params = model.parameters();
out.loss = loss.item();
out.params = params.length;
out.finiteGrads = params.filter((p) => p.grad && p.grad.dataSync().every(Number.isFinite)).length;
out.gradSq = params.reduce((s, p) => s + p.grad.dataSync().reduce((a, g) => a + g * g, 0), 0);
out.cudaAvailable = rx.cudaAvailable();
try {
  rx.zeros([2], { device: 'cuda' }).dispose();
  out.cudaError = null;
} catch (e) {
  out.cudaError = { isResnextError: e instanceof rx.ResnextError, code: e.code, message: e.message };
}
process.stdout.write(JSON.stringify(out));
`;

function run(dir: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(path.join(binDir, 'node'), args, { cwd: dir, env, encoding: 'utf8', timeout: 120000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  for (const f of ['dist/index.js', 'dist/cli/main.js', 'dist/cli/doctor.js'])
    if (!fs.existsSync(path.join(root, f))) throw new Error(`${f} is missing: run \`npm run build:ts\` (npm test builds it) before this test`);
  // Up to date unless binding.gyp or native/ changed since `npm run prebuild`.
  execFileSync(process.execPath, [path.join(root, 'scripts', 'prebuild.js'), '--if-stale', '--quiet'], { cwd: root, stdio: 'inherit', timeout: 600000 });

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'resnext-pack-'));
  // A PATH with node, npm and sh (npm runs lifecycle scripts with `sh -c`) only.
  binDir = path.join(tmp, 'bin');
  fs.mkdirSync(binDir);
  fs.symlinkSync(process.execPath, path.join(binDir, 'node'));
  fs.symlinkSync('/bin/sh', path.join(binDir, 'sh'));
  const npmCli = [
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'),
    path.join(fs.realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim()), '..', 'npm-cli.js'),
  ].find((p) => fs.existsSync(p));
  if (!npmCli) throw new Error('npm-cli.js not found beside node or npm');
  fs.writeFileSync(path.join(binDir, 'npm'), `#!/bin/sh\nexec "${process.execPath}" "${npmCli}" "$@"\n`, { mode: 0o755 });
  env = cleanEnv(binDir);

  // --ignore-scripts: pack what is built (prepare would rebuild dist/ under other test files' feet).
  const out = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], { cwd: root, encoding: 'utf8', timeout: 120000 });
  pack = (JSON.parse(out) as PackResult[])[0];
  tarball = path.join(tmp, pack.filename);
  console.log(
    `pack.test.ts: ${pack.filename} ${(pack.size / 1e6).toFixed(2)} MB packed, ${(pack.unpackedSize / 1e6).toFixed(2)} MB unpacked, ${pack.entryCount} files; ` +
      `largest: ${[...pack.files].sort((a, b) => b.size - a.size).slice(0, 4).map((f) => `${f.path} ${(f.size / 1e6).toFixed(2)} MB`).join(', ')}`,
  );
}, 900000);

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the tarball holds the prebuild, the compiled JS and the native sources, nothing else, under 15 MB', () => {
  const files = pack.files.map((f) => f.path);
  expect(files).toEqual(expect.arrayContaining([
    'package.json', 'README.md', 'dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/cli/doctor.js',
    `prebuilds/${tuple}/resnext.glibc.node`, 'binding.gyp', 'CMakeLists.txt', 'scripts/install.js', 'native/binding/module.cc',
  ]));
  // The source build's inputs (the fallback) are all there: every file binding.gyp compiles.
  const gyp = JSON.parse(fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8')) as { targets: { sources: string[] }[] };
  expect(files).toEqual(expect.arrayContaining(gyp.targets[0].sources));
  const unwanted = files.filter((f) => /^(test|bench|build|build-cuda|\.cache|\.device|\.ci|lib|node_modules|coverage)\//.test(f) || /\.tgz$/.test(f));
  expect(unwanted).toEqual([]);
  expect(pack.size).toBeLessThan(MAX_PACKED_BYTES);
});

test('no compiler, make or cmake on the sandbox PATH', () => {
  for (const t of TOOLS) expect({ tool: t, found: which(t, env.PATH!) }).toEqual({ tool: t, found: null });
  expect(which('node', env.PATH!)).not.toBeNull();
  expect(which('npm', env.PATH!)).not.toBeNull();
  expect(fs.readdirSync(binDir).sort()).toEqual(['node', 'npm', 'sh']);
});

describe.each([
  ['with the install script', 'scripts', [] as string[]],
  ['with --ignore-scripts', 'noscripts', ['--ignore-scripts']],
])('installed %s, without compilers', (_label, name, extra) => {
  let dir: string;
  let pkgDir: string;
  let installLog: string;
  beforeAll(() => {
    ({ dir, log: installLog } = install(name, extra));
    pkgDir = path.join(dir, 'node_modules', 'resnext');
  }, 600000);

  test('loads the prebuilt binary (no build) and runs a ResNeXt forward and backward', () => {
    if (!extra.length) expect(installLog).toContain('resnext: using the native addon prebuilds');
    const r = run(dir, ['-e', CHECK]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(fs.realpathSync(out.addonPath)).toBe(fs.realpathSync(path.join(pkgDir, 'prebuilds', tuple, 'resnext.glibc.node')));
    expect(fs.existsSync(path.join(pkgDir, 'build'))).toBe(false);
    expect(Number.isFinite(out.loss)).toBe(true);
    expect(out.params).toBeGreaterThan(50);
    expect(out.finiteGrads).toBe(out.params);
    expect(out.gradSq).toBeGreaterThan(0);
    if (!out.cudaAvailable) {
      expect(out.cudaError).toMatchObject({ isResnextError: true, code: 'ERR_DEVICE' });
      expect(out.cudaError.message).toMatch(/CUDA/);
    }
  });

  test('`resnext doctor --json` names the prebuild and says whether CUDA can be used and why not', () => {
    const r = run(dir, [path.join(dir, 'node_modules', '.bin', 'resnext'), 'doctor', '--json']);
    expect(r.status).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.addon).toMatchObject({ loaded: true, kind: 'prebuild' });
    expect(fs.realpathSync(rep.addon.path)).toBe(fs.realpathSync(path.join(pkgDir, 'prebuilds', tuple, 'resnext.glibc.node')));
    expect(rep.cpu.check).toBe('ok');
    expect(rep.verdict.ok).toBe(true);
    if (!rep.cuda.available) {
      expect(rep.cuda.reason.length).toBeGreaterThan(20);
      expect(rep.verdict.message).toMatch(/CUDA unavailable: /);
      expect(rep.cuda.libraries.map((l: { name: string }) => l.name)).toEqual(['libcuda.so.1', 'libcudnn.so.9', 'libcublas.so.13', 'libcublasLt.so.13']);
    } else expect(rep.cuda.device).toHaveProperty('name');
    expect(fs.existsSync(path.join(pkgDir, 'build'))).toBe(false);
  });
});
