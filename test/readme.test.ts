/** The README's example runs as written (documentation matches behaviour). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';
import * as rx from '../lib';

test('README example compiles and runs, and frees its intermediates', () => {
  const md = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  const block = /```ts\n([\s\S]*?)```/.exec(md);
  expect(block).not.toBeNull();
  const js = ts.transpileModule(block![1], { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } }).outputText;
  const logs: unknown[][] = [];
  const fakeConsole = { log: (...a: unknown[]) => logs.push(a) };
  const before = rx.memory().tensors;
  new Function('require', 'console', 'exports', js)((m: string) => (m === 'resnext' ? rx : require(m)), fakeConsole, {});
  const loss = logs.find((l) => l[0] === 'loss');
  expect(loss).toBeDefined();
  expect(Number.isFinite(loss![1] as number)).toBe(true);
  // What stays: the example's 7 long-lived tensors (w, 4 BN tensors, fc, x); the leaf gradients
  // were disposed by zeroGrad and every intermediate by tidy.
  expect(rx.memory().tensors - before).toBe(7);
});
