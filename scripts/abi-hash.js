#!/usr/bin/env node
// Prints the backend ABI version (native/core/backend_abi.cmake computes the same in CMake): the
// first 15 hex digits of SHA-256 over the concatenated SHA-256 hex digests of the shared core
// headers. `--define` prints it as a C literal for binding.gyp's defines; `--root DIR` hashes
// the headers of another checkout (tests).
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const HEADERS = ['backend.h', 'ops.h', 'tensor.h', 'dtype.h', 'error.h'];

function backendAbi(root = path.resolve(__dirname, '..')) {
  const core = path.join(root, 'native', 'core');
  const all = HEADERS.map((h) => crypto.createHash('sha256').update(fs.readFileSync(path.join(core, h))).digest('hex')).join('');
  return `0x${crypto.createHash('sha256').update(all).digest('hex').slice(0, 15)}`;
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const r = args.indexOf('--root');
  const v = backendAbi(r >= 0 ? path.resolve(args[r + 1]) : undefined);
  process.stdout.write(args.includes('--define') ? `${v}ULL` : `${v}\n`);
}

module.exports = { backendAbi, HEADERS };
