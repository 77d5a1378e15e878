// `npm install` hook: use a prebuilt addon when one matches this platform, else build from
// source with cmake-js (needs cmake and a C++17 compiler). Loading never depends on this
// script having run (node-gyp-build finds prebuilds/ at run time).
const { execSync } = require('node:child_process');
const path = require('node:path');
const root = path.join(__dirname, '..');
try {
  require('node-gyp-build').resolve(root);
  console.log('resnext: using the prebuilt/compiled native addon found for this platform');
} catch {
  console.log('resnext: no prebuilt addon for this platform; building from source with cmake-js');
  execSync('npx cmake-js compile --CDNAPI_VERSION=8', { cwd: root, stdio: 'inherit' });
}
