import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * Folders of src/, lowest first, each with the folders it may import (docs/architecture.md explains the
 * layering; test/util/entrances.test.ts checks that page against this table). A folder is entered only
 * through its index.ts; root modules (errors.ts, config.ts, probes.ts) and util/ sit below every folder.
 * Tests and bench may import any module.
 */
export const LAYERS = {
  util: [],
  checkpoint: ['util'],
  storage: ['util'],
  engine: ['checkpoint', 'util'],
  eval: ['engine', 'util'],
  defense: ['engine', 'checkpoint', 'util'],
  demo: ['checkpoint', 'util'],
  pipeline: ['defense', 'eval', 'engine', 'checkpoint', 'util'],
  queue: ['pipeline', 'engine', 'checkpoint', 'storage', 'util'],
  api: ['queue', 'pipeline', 'defense', 'checkpoint', 'storage', 'util'],
  // client: the typed HTTP client; only the API's schema types (type-only imports, nothing of the server runs).
  client: ['api'],
  cli: ['client', 'api', 'queue', 'pipeline', 'defense', 'eval', 'engine', 'checkpoint', 'storage', 'demo', 'util'],
};
const FOLDERS = Object.keys(LAYERS);

/** no-restricted-imports for the files of `folder` (null: the root modules src/*.ts). */
function layerRule(folder) {
  const allowed = folder === null ? ['util'] : LAYERS[folder];
  const patterns = [];
  for (const other of FOLDERS) {
    if (other === folder) continue;
    if (allowed.includes(other)) {
      patterns.push({
        group: [`**/${other}/**`, `!**/${other}/index.js`],
        message: `enter src/${other} through its index.ts (${other}/index.js), not a module inside it.`,
      });
    } else {
      patterns.push({
        group: [`**/${other}/**`],
        message: `${folder === null ? 'root modules' : `src/${folder}`} may not import src/${other} (layering: docs/architecture.md).`,
      });
    }
  }
  // onnxruntime stays inside src/engine: everything else goes through the engine facade.
  if (folder !== 'engine') patterns.push({ group: ['onnxruntime-node', 'onnxruntime-common'], message: 'onnxruntime is imported only inside src/engine; use the engine facade (engine/index.js).' });
  return { 'no-restricted-imports': ['error', { patterns }] };
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', '.fgsn/**', 'helm/**', 'docker/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  { files: ['src/*.ts'], rules: layerRule(null) },
  ...FOLDERS.map((folder) => ({ files: [`src/${folder}/**/*.ts`], rules: layerRule(folder) })),
);
