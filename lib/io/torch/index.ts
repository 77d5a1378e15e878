/** PyTorch `torch.save` files: loadTorch (zip and legacy formats) and saveTorch (zip format). */
export { loadTorch, openTorch, type LoadTorchOptions, type TorchReader, type TorchIndexEntry } from './load';
export { saveTorch, type SaveTorchOptions } from './save';
