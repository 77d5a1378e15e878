#!/usr/bin/env node
// `npm run build:gloo`: builds resnext_gloo.node, the gloo collectives for data-parallel training
// (native/gloo, its own CMake project), into build-gloo/Release/ where
// lib/train/distributed/gloo.ts looks for it. Needs gloo's headers and library: Debian/Ubuntu
// `apt-get install libgloo-dev` (or CMAKE_PREFIX_PATH pointing at a gloo install).
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
if (process.platform !== 'linux') {
  console.error(`build:gloo: the gloo backend builds on Linux only (this is ${process.platform})`);
  process.exit(1);
}
// Node's headers: npm passes its nodedir setting to scripts; when run directly, use the
// system's headers if they are there (cmake-js would otherwise download them).
const fs = require('node:fs');
const env = { ...process.env };
if (!env.npm_config_nodedir && fs.existsSync('/usr/include/node/node_api.h')) env.npm_config_nodedir = '/usr';
const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
const r = spawnSync(process.execPath, [cmakeJs, 'compile', '-d', path.join(root, 'native', 'gloo'), '-O', path.join(root, 'build-gloo'), '--CDNAPI_VERSION=8'], {
  cwd: root,
  env,
  stdio: 'inherit',
});
if (r.status !== 0) {
  console.error('build:gloo: the build failed; is libgloo-dev installed (apt-get install libgloo-dev)?');
  process.exit(r.status ?? 1);
}
