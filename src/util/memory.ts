/**
 * Frees a typed array's memory now instead of when V8 collects it, by detaching its ArrayBuffer
 * (ArrayBuffer.prototype.transfer, Node >= 21), when the array spans the whole buffer: a view into a larger
 * buffer is left alone (detaching would pull the buffer from under its other views). The array reads as
 * empty afterwards, so only an owner that is done with it may call this. Why: large short-lived buffers (KV
 * caches, matrix rows) count as V8 external memory, which V8 collects late; on the 125M trio a search's
 * garbage buffers held 70-200 MiB beside the engine's weights (bench/scale).
 */
export function releaseBuffer(a: ArrayBufferView): void {
  const buf = a.buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer; detached?: boolean };
  // Released already (transfer would throw), or a runtime without transfer (the release is then V8's to do).
  if (buf.detached === true || typeof buf.transfer !== 'function') return;
  if (a.byteOffset === 0 && a.byteLength === buf.byteLength) buf.transfer(0);
}
