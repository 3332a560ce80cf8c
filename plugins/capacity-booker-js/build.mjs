// Builds the component: `node build.mjs [OUT.wasm]` (default: capacity-booker-js.wasm
// beside this script). componentize-js resolves src/app.js's relative import of
// ./rules.js itself (the source directory is mapped into the build), so no bundler.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? resolve(here, 'capacity-booker-js.wasm'));
const started = performance.now();
const { component } = await componentize({
  sourcePath: resolve(here, 'src/app.js'),
  witPath: resolve(here, '../../wit'),
  worldName: 'booker-scheduler',
  // No outbound HTTP; keep stdio (errors to stderr) and clocks (the rules read the wall
  // clock when `now` is not configured).
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(`${out}: ${component.length} bytes (${(component.length / 1048576).toFixed(1)} MiB), built in ${seconds} s`);
