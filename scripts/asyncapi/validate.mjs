#!/usr/bin/env node
// Validates AsyncAPI documents (JSON or YAML) the way the AsyncAPI tooling
// does: the official parser checks the document against the AsyncAPI schema
// and its core ruleset, then every message example is checked against the
// message's payload and headers schemas (the v3 ruleset does not do that).
//
//   npm ci --prefix scripts/asyncapi
//   node scripts/asyncapi/validate.mjs FILE...
//
// Exits 0 when every file is valid, 1 when one is not (each problem is
// printed with its path in the document), 2 on bad usage.

import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const SEVERITY = ['error', 'warning', 'info', 'hint'];

// Formats that schemars emits for Rust integers and floats: not JSON Schema
// formats, so they are accepted as annotations.
const RUST_FORMATS = ['int8', 'int16', 'int32', 'int64', 'int128', 'uint', 'uint8', 'uint16',
  'uint32', 'uint64', 'uint128', 'int', 'float', 'double'];

async function validate(file) {
  const text = await readFile(file, 'utf8');
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const problems = [];
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] ?? String(d.severity);
    const where = d.path && d.path.length ? d.path.join('.') : '(document)';
    const line = `${severity} ${d.code}: ${d.message} at ${where}`;
    if (d.severity === 0) problems.push(line);
    else console.error(`${file}: ${line}`);
  }
  if (!document) {
    if (problems.length === 0) problems.push('the parser returned no document');
    return problems;
  }

  const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false });
  addFormats(ajv);
  for (const f of RUST_FORMATS) ajv.addFormat(f, true);
  const json = document.json();
  const messages = json.components?.messages ?? {};
  let checked = 0;
  for (const [name, message] of Object.entries(messages)) {
    for (const [i, example] of (message.examples ?? []).entries()) {
      for (const part of ['payload', 'headers']) {
        if (example[part] === undefined || message[part] === undefined) continue;
        const validateFn = ajv.compile(message[part]);
        checked += 1;
        if (!validateFn(example[part])) {
          for (const e of validateFn.errors) {
            problems.push(
              `error example-${part}: components.messages.${name}.examples[${i}].${part}${e.instancePath}: ${e.message}`,
            );
          }
        }
      }
    }
  }
  if (problems.length === 0) {
    console.log(`${file}: valid AsyncAPI ${json.asyncapi} (${Object.keys(messages).length} messages, ${checked} example parts checked)`);
  }
  return problems;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node scripts/asyncapi/validate.mjs FILE...');
  process.exit(2);
}
let failed = false;
for (const file of files) {
  let problems;
  try {
    problems = await validate(file);
  } catch (e) {
    problems = [`cannot validate: ${e.message}`];
  }
  for (const p of problems) console.error(`${file}: ${p}`);
  if (problems.length) failed = true;
}
process.exit(failed ? 1 : 0);
