/** Public surface of src/api: what other folders may import (eslint.config.js enforces it). */
export { openApiDocument } from './app.js';
export { createLogger, startServer, stopOnSignals } from './server.js';
