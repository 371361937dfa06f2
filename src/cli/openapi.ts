/** `fgsn openapi`: prints the OpenAPI 3.1 document (regenerate with `node bin/fgsn.js openapi > openapi/openapi.json`). */
import { openApiDocument } from '../api/index.js';
import { loadConfig } from '../config.js';

export async function run(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write('usage: fgsn openapi > openapi/openapi.json\n\nPrints the OpenAPI 3.1 document of the HTTP API; connects to nothing.\n');
    return 0;
  }
  // The document does not depend on deployment settings: build it from defaults only.
  const doc = await openApiDocument(loadConfig({}));
  process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
  return 0;
}
