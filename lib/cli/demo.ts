/**
 * A small end-to-end demo with no download: a procedurally generated 4-class image dataset
 * (horizontal stripes, vertical stripes, diagonal stripes, a centred blob; random phase,
 * frequency, contrast and noise), and a tiny ResNeXt-style network built from the raw ops:
 * conv -> BN+ReLU -> grouped 3x3 conv -> BN+ReLU -> 1x1 conv -> BN+add+ReLU -> pool -> linear,
 * trained with SGD + momentum. Prints loss and accuracy as it goes, then held-out accuracy.
 */
import * as rx from '../index';

const CLASSES = ['horizontal', 'vertical', 'diagonal', 'blob'];

function makeData(n: number, size: number, seed: number): { x: Float32Array; y: Int32Array } {
  let s = seed >>> 0 || 1;
  const r = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  const x = new Float32Array(n * size * size);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 4;
    y[i] = c;
    const f = 0.5 + r() * 1.0, ph = r() * 6.28, amp = 0.5 + r(), cx = size / 2 + (r() - 0.5) * 4, cy = size / 2 + (r() - 0.5) * 4;
    const sigma = 1.5 + r() * 1.5;
    for (let h = 0; h < size; h++)
      for (let w = 0; w < size; w++) {
        let v: number;
        if (c === 0) v = Math.sin(h * f + ph);
        else if (c === 1) v = Math.sin(w * f + ph);
        else if (c === 2) v = Math.sin((h + w) * f * 0.7 + ph);
        else v = Math.exp(-((h - cy) ** 2 + (w - cx) ** 2) / (2 * sigma ** 2)) * 2 - 0.5;
        x[i * size * size + h * size + w] = amp * v + (r() - 0.5) * 0.8;
      }
  }
  return { x, y };
}

function main(): void {
  const size = 12, trainN = 512, testN = 256, batch = 64, epochs = 4, width = 16, groups = 4;
  rx.manualSeed(1);
  const train = makeData(trainN, size, 7);
  const test = makeData(testN, size, 99);
  const kaiming = (shape: number[]) => {
    const fanOut = shape[0] * shape[2] * shape[3];
    return rx.randn(shape, { std: Math.sqrt(2 / fanOut), requiresGrad: true });
  };
  const bnParams = (c: number) => ({
    weight: rx.ones([c], { requiresGrad: true }), bias: rx.zeros([c], { requiresGrad: true }),
    runningMean: rx.zeros([c]), runningVar: rx.ones([c]),
  });
  const stem = kaiming([width, 1, 3, 3]), bn0 = bnParams(width);
  const c1 = kaiming([width, width, 1, 1]), bn1 = bnParams(width);
  const c2 = kaiming([width, width / groups, 3, 3]), bn2 = bnParams(width);
  const c3 = kaiming([width, width, 1, 1]), bn3 = bnParams(width);
  const fc = rx.randn([4, width], { std: 0.1, requiresGrad: true }), fcb = rx.zeros([4], { requiresGrad: true });
  const params = [stem, c1, c2, c3, fc, fcb, ...[bn0, bn1, bn2, bn3].flatMap((b) => [b.weight, b.bias])];
  const bufs = params.map((p) => rx.zerosLike(p));

  const forward = (x: rx.Tensor, training: boolean) => {
    const bn = (b: ReturnType<typeof bnParams>) => ({ ...b, training });
    const a = rx.batchNormReLU(rx.conv2d(x, stem, { padding: 1 }), bn(bn0));
    const h1 = rx.batchNormReLU(rx.conv2d(a, c1), bn(bn1));
    const h2 = rx.batchNormReLU(rx.conv2d(h1, c2, { padding: 1, stride: 2, groups }), bn(bn2));
    const down = rx.maxPool2d(a, 2); // parameter-free shortcut to the strided shape
    const h3 = rx.batchNormAddReLU(rx.conv2d(h2, c3), down, bn(bn3));
    return rx.linear(rx.flatten(rx.globalAvgPool2d(h3)), fc, fcb);
  };

  console.log(`resnext demo: ${trainN} synthetic ${size}x${size} images, 4 classes (${CLASSES.join(', ')}), ${rx.numThreads()} CPU threads`);
  const t0 = Date.now();
  let step = 0;
  const stepsPerEpoch = trainN / batch;
  for (let epoch = 0; epoch < epochs; epoch++) {
    let lossSum = 0, correct = 0;
    for (let b = 0; b < stepsPerEpoch; b++, step++) {
      rx.tidy(() => {
        const xb = rx.tensor(train.x.subarray(b * batch * size * size, (b + 1) * batch * size * size), [batch, 1, size, size]);
        const yb = train.y.subarray(b * batch, (b + 1) * batch);
        const logits = forward(xb, true);
        const loss = rx.crossEntropy(logits, yb);
        loss.backward();
        const lr = 0.1 * 0.5 * (1 + Math.cos((Math.PI * step) / (epochs * stepsPerEpoch)));
        params.forEach((p, i) => {
          rx.sgdStep(p, p.grad!, { lr, momentum: 0.9, weightDecay: 5e-4, momentumBuffer: bufs[i], firstStep: step === 0 });
          p.zeroGrad();
        });
        lossSum += loss.item();
        const pred = rx.argmax(logits).dataSync();
        pred.forEach((p, i) => {
          if (p === yb[i]) correct++;
        });
      });
    }
    console.log(`epoch ${epoch + 1}/${epochs}  loss ${(lossSum / stepsPerEpoch).toFixed(4)}  train acc ${((100 * correct) / trainN).toFixed(1)}%  ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  }
  const acc = rx.tidy(() =>
    rx.noGrad(() => {
      const logits = forward(rx.tensor(test.x, [testN, 1, size, size]), false);
      const pred = Array.from(rx.argmax(logits).dataSync());
      return pred.reduce((a, p, i) => a + (p === test.y[i] ? 1 : 0), 0) / testN;
    }),
  );
  console.log(`held-out accuracy: ${(100 * acc).toFixed(1)}% on ${testN} images (chance 25%)`);
  for (const t of [...params, ...bufs, bn0, bn1, bn2, bn3].flatMap((v) => (v instanceof rx.Tensor ? [v] : [v.runningMean, v.runningVar]))) t.dispose();
}

main();
