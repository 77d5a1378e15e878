// `npm install` hook: use a prebuilt addon when one matches this platform and loads here, else
// build from source with cmake-js (needs cmake >= 3.19 and a C++17 compiler).
// Loading never depends on this script having run: node-gyp-build finds prebuilds/ at run time
// (recent npm versions run dependencies' install scripts only once the user approves them).
// `npm install resnext --build-from-source` (or `npm rebuild resnext --build-from-source`, or
// npm_config_build_from_source=true) builds from source even when a prebuild matches.
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.join(__dirname, '..');
const fromSource = /^(true|1|resnext)$/.test(process.env.npm_config_build_from_source || '');

function buildFromSource(why) {
  console.log(`resnext: ${why}; building from source with cmake-js (needs cmake >= 3.19 and a C++17 compiler)`);
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  } catch {
    console.error('resnext: cmake-js is not installed, so the addon cannot be built from source: npm install cmake-js');
    process.exit(1);
  }
  const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--CDNAPI_VERSION=8'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(
      'resnext: the source build failed (see above). Install cmake (>= 3.19) and a C++17 compiler (g++ or clang++), ' +
        'then run `npm rebuild resnext`; `npx resnext doctor` reports what was found.',
    );
    process.exit(r.status || 1);
  }
}

if (fromSource) {
  buildFromSource('--build-from-source was given');
} else {
  let file = null;
  try {
    file = require('node-gyp-build').resolve(root);
  } catch {
    buildFromSource(`no prebuilt addon for ${process.platform}-${process.arch}`);
  }
  if (file) {
    // A prebuild can match by name and still not load (an older glibc, say): then build.
    const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)})`], { encoding: 'utf8' });
    if (r.status === 0) console.log(`resnext: using the native addon ${path.relative(root, file)}`);
    else buildFromSource(`${path.relative(root, file)} does not load here (${(r.stderr || '').trim().split('\n').find((l) => /Error/.test(l)) || 'unknown error'})`);
  }
}
