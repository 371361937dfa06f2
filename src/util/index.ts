/** Small helpers below every folder of src/ (seeded PRNG, sampling, sha256, JSONL); they import no folder. */
export * from './prng.js';
export * from './sample.js';
export * from './hash.js';
export * from './jsonl.js';
export * from './memory.js';
