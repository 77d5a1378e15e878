/** CPU kernels run off the JS thread: the event loop keeps turning while data() waits. */
import * as rx from '../lib';

test('the event loop stays responsive while queued CPU kernels run', async () => {
  const x = rx.randn([8, 64, 48, 48]);
  const w = rx.randn([64, 64, 3, 3], { std: 0.05 });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const t0 = Date.now();
  let y = x;
  const made: rx.Tensor[] = [];
  for (let i = 0; i < 6; i++) {
    y = rx.relu(rx.conv2d(y, w, { padding: 1 }));
    made.push(y);
  }
  const enqueueMs = Date.now() - t0;
  const data = await y.data();
  const totalMs = Date.now() - t0;
  clearInterval(timer);
  expect(data.length).toBe(8 * 64 * 48 * 48);
  // Issuing the ops returned long before they finished, and timers fired while data() waited.
  expect(enqueueMs).toBeLessThan(totalMs / 2);
  expect(ticks).toBeGreaterThan(0);
  for (const t of [x, w, ...made]) t.dispose();
});

test('data() of a disposed handle rejects synchronously with ERR_DISPOSED; pending kernels keep their inputs alive', async () => {
  const a = rx.randn([256, 256]);
  const b = rx.matmul(a, a);
  a.dispose(); // the queued matmul holds its own reference to a's storage
  const v = await b.data();
  expect(v.every((x) => Number.isFinite(x))).toBe(true);
  b.dispose();
  expect(() => b.data()).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
});
