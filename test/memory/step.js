// One training step (forward, cross-entropy, backward, SGD update, zero-grad) returning the loss,
// shared by the memory scripts in this folder.
module.exports = function makeStep(rx, model, x, y) {
  const opt = new rx.optim.SGD(model.parameters(), { lr: 0.01, momentum: 0.9, weightDecay: 5e-4 });
  return () => {
    const loss = rx.crossEntropy(model.forward(x), y);
    loss.backward();
    opt.step();
    opt.zeroGrad();
    return loss.item();
  };
};
