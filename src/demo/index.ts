/** Public surface of src/demo: what other folders may import (eslint.config.js enforces it). */
export { writeDemoTestbed } from './fixtures.js';
export type { DemoTestbed } from './fixtures.js';
export { PLANTED_SAFETY_ROWS } from './planted-model.js';
