#!/usr/bin/env node
// Runs an ONNX file in onnxruntime-node (CPU provider) outside jest: onnxruntime's output
// tensors check `instanceof Float32Array`, which fails across jest's vm realm.
// Usage: node ort-run.js MODEL.onnx JOBS.json, JOBS = [{ input, dims, output }]: raw float32
// files in and out. Prints one JSON line per job: { dims, ms }.
const fs = require('node:fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, jobsFile] = process.argv.slice(2);
  const jobs = JSON.parse(fs.readFileSync(jobsFile, 'utf8'));
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: Number(process.env.ORT_THREADS || 2) });
  const [inputName] = session.inputNames;
  const [outputName] = session.outputNames;
  for (const job of jobs) {
    const buf = fs.readFileSync(job.input);
    const x = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    const t0 = performance.now();
    const out = await session.run({ [inputName]: new ort.Tensor('float32', x, job.dims) });
    const ms = performance.now() - t0;
    const y = out[outputName];
    fs.writeFileSync(job.output, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
    process.stdout.write(`${JSON.stringify({ dims: y.dims, ms })}\n`);
  }
  await session.release();
}
main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
