/** The build: one source list for cmake-js and node-gyp, no CUDA link in the CPU addon, both entry points. */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.join(__dirname, '..');
const gyp = JSON.parse(fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8'));
const gypSources: string[] = gyp.targets[0].sources;

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

describe('build', () => {
  test('binding.gyp lists every C++ source of the CPU addon (core + cpu + binding), and nothing else', () => {
    const onDisk = ['native/core', 'native/cpu', 'native/binding']
      .flatMap((d) => walk(path.join(root, d)))
      .filter((f) => f.endsWith('.cc'))
      .map((f) => path.relative(root, f).split(path.sep).join('/'))
      .sort();
    expect([...gypSources].sort()).toEqual(onDisk);
  });

  test('cmake-js compiled exactly the binding.gyp list', () => {
    const used = fs.readFileSync(path.join(root, 'build', 'sources.txt'), 'utf8').trim().split('\n')
      .map((f) => path.relative(root, f).split(path.sep).join('/'));
    expect(used.sort()).toEqual([...gypSources].sort());
  });

  test('the addon interface in lib/native/addon.generated.ts matches the bind list of the built addon', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const gen = require('../scripts/gen-addon-types.js') as { render(a: unknown): string; target: string };
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const addon = require(path.join(root, 'build', 'Release', 'resnext.node'));
    expect(fs.readFileSync(gen.target, 'utf8')).toBe(gen.render(addon));
    // Every export is in the signature list (nothing bound outside it).
    const fns = Object.keys(addon).filter((k) => typeof addon[k] === 'function' && k !== 'TensorHandle').sort();
    expect(fns).toEqual(addon.signatures.map((s: { name: string }) => s.name).sort());
  });

  test('only lib/ops and lib/tensor (and the loader in lib/native) use the raw addon; it is not public', () => {
    const users = walk(path.join(root, 'lib'))
      .filter((f) => f.endsWith('.ts'))
      .filter((f) => /import \{[^}]*\bnative\b[^}]*\} from '[./]*native\/addon'/.test(fs.readFileSync(f, 'utf8')))
      .map((f) => path.relative(path.join(root, 'lib'), f).split(path.sep)[0]);
    expect(users.filter((d) => !['native', 'ops', 'tensor'].includes(d))).toEqual([]);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    expect(Object.keys(require('../lib'))).not.toContain('native');
  });

  test('the binding includes no backend header, and the core none of a backend folder', () => {
    for (const f of walk(path.join(root, 'native/binding')))
      expect({ f, src: fs.readFileSync(f, 'utf8') }).not.toEqual(expect.objectContaining({ src: expect.stringMatching(/#include\s*"[^"]*(cpu|cuda)\//) }));
    for (const f of walk(path.join(root, 'native/core')))
      expect({ f, src: fs.readFileSync(f, 'utf8') }).not.toEqual(expect.objectContaining({ src: expect.stringMatching(/#include\s*"[^"]*(cpu|cuda)\//) }));
  });

  test('the core never includes napi.h; only native/binding does', () => {
    for (const f of walk(path.join(root, 'native/core'))) expect(fs.readFileSync(f, 'utf8')).not.toMatch(/#include\s*[<"]napi\.h/);
  });

  test('the CPU addon has no link-time dependency on any CUDA library', () => {
    const addon = path.join(root, 'build', 'Release', 'resnext.node');
    let dyn: string;
    try {
      dyn = execFileSync('readelf', ['-d', addon], { encoding: 'utf8' });
    } catch {
      dyn = execFileSync('objdump', ['-p', addon], { encoding: 'utf8' });
    }
    expect(dyn).toMatch(/NEEDED/);
    expect(dyn).not.toMatch(/libcuda|libcudart|libcudnn|libcublas/);
  });

  test('N-API version: the prebuild tag is pinned in package.json; both builds report the experimental module version', () => {
    // The module reports NAPI_VERSION_EXPERIMENTAL so tensor handles' finalizers run inside GC
    // (native/binding/tensor_handle.h); package.json's napi_versions names the prebuild.
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    const v = pkg.binary.napi_versions[0];
    expect(pkg.scripts['build:native']).toContain(`NAPI_VERSION=${v}`);
    expect(gyp.targets[0].defines).toEqual(expect.arrayContaining(['NAPI_EXPERIMENTAL', 'NAPI_VERSION=2147483647']));
    const cmake = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8');
    expect(cmake).toMatch(/target_compile_definitions\(\$\{PROJECT_NAME\} PRIVATE NAPI_EXPERIMENTAL NAPI_VERSION=2147483647/);
  });

  test('require and import entry points expose the same API', () => {
    const script =
      "const c = require('./dist/index.js'); import('./dist/index.mjs').then((m) => {" +
      "const names = ['tensor','zeros','ones','randn','Tensor','noGrad','tidy','memory','gradcheck','conv2d','batchNorm2d'," +
      "'batchNormReLU','batchNormAddReLU','relu','add','mul','sum','mean','maxPool2d','linear','crossEntropy'];" +
      "const miss = names.filter((n) => typeof c[n] !== 'function' || m[n] !== c[n]);" +
      "const t = m.tensor([1, 2], [2]); console.log(JSON.stringify({ miss, v: Array.from(m.relu(t).dataSync()) }));});";
    const out = execFileSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ miss: [], v: [1, 2] });
  });
});

describe('per-environment state', () => {
  test('the addon loads and runs in worker threads alongside the main thread', async () => {
    const { Worker } = await import('node:worker_threads');
    const code =
      "const { parentPort } = require('node:worker_threads'); const rx = require(process.argv[2]);" +
      "const x = rx.randn([2, 4, 6, 6], { seed: 3 }); const w = rx.randn([4, 1, 3, 3], { seed: 4 });" +
      "const y = rx.conv2d(x, w, { padding: 1, groups: 4 });" +
      "let code = null; try { rx.relu('x'); } catch (e) { code = e.code + ':' + (e instanceof rx.ResnextError); }" +
      "parentPort.postMessage({ sum: Array.from(y.dataSync()).reduce((a, b) => a + b, 0), code });";
    const run = () =>
      new Promise<{ sum: number; code: string }>((resolve, reject) => {
        const wk = new Worker(code, { eval: true, argv: [path.join(root, 'dist', 'index.js')] });
        wk.once('message', resolve);
        wk.once('error', reject);
      });
    const [a, b] = await Promise.all([run(), run()]);
    expect(a.sum).toBeCloseTo(b.sum, 4);
    expect(a.code).toBe('ERR_ARG:true');
  });
});
