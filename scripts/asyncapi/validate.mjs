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
import yaml from 'js-yaml';

const SEVERITY = ['error', 'warning', 'info', 'hint'];

// Formats that schemars emits for Rust integers and floats: not JSON Schema
// formats, so they are accepted as annotations.
const RUST_FORMATS = ['int8', 'int16', 'int32', 'int64', 'int128', 'uint', 'uint8', 'uint16',
  'uint32', 'uint64', 'uint128', 'int', 'float', 'double'];

async function validate(file) {
  const text = await readFile(file, 'utf8');
  const problems = [];

  // 1. The official parser: the AsyncAPI JSON Schema plus the core ruleset.
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(text, { source: file });
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] ?? String(d.severity);
    const where = d.path && d.path.length ? d.path.join('.') : '(document)';
    const line = `${severity} ${d.code}: ${d.message} at ${where}`;
    if (d.severity === 0) problems.push(line);
    else console.error(`${file}: ${line}`);
  }
  if (!document && problems.length === 0) problems.push('the parser returned no document');

  // 2. Every message example against its payload and headers schemas, on the
  // raw document so that `$ref`s (recursive ones too) resolve as written.
  let raw;
  try {
    raw = yaml.load(text, { schema: yaml.JSON_SCHEMA });
  } catch (e) {
    problems.push(`cannot read the document: ${e.message}`);
    return { problems };
  }
  const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false });
  addFormats(ajv);
  for (const f of RUST_FORMATS) ajv.addFormat(f, true);
  // Only the components: the rest of the document is no schema.
  ajv.addSchema({ components: raw?.components ?? {} }, 'asyncapi');
  const messages = raw?.components?.messages ?? {};
  let checked = 0;
  for (const [name, message] of Object.entries(messages)) {
    for (const [i, example] of (message.examples ?? []).entries()) {
      for (const part of ['payload', 'headers']) {
        if (example[part] === undefined || message[part] === undefined) continue;
        const pointer = `/components/messages/${escape(name)}/${part}`;
        let check;
        try {
          check = ajv.compile({ $ref: `asyncapi#${pointer}` });
        } catch (e) {
          problems.push(`error example-${part}: components.messages.${name}.${part}: ${e.message}`);
          continue;
        }
        checked += 1;
        if (!check(example[part])) {
          for (const e of check.errors) {
            problems.push(
              `error example-${part}: components.messages.${name}.examples[${i}].${part}${e.instancePath}: ${e.message}`,
            );
          }
        }
      }
    }
  }
  return { problems, version: raw?.asyncapi, messages: Object.keys(messages).length, checked };
}

// A JSON pointer segment.
function escape(segment) {
  return encodeURIComponent(segment.replaceAll('~', '~0').replaceAll('/', '~1'));
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node scripts/asyncapi/validate.mjs FILE...');
  process.exit(2);
}
let failed = false;
for (const file of files) {
  let result;
  try {
    result = await validate(file);
  } catch (e) {
    result = { problems: [`cannot validate: ${e.message}`] };
  }
  for (const p of result.problems) console.error(`${file}: ${p}`);
  if (result.problems.length) {
    failed = true;
  } else {
    console.log(
      `${file}: valid AsyncAPI ${result.version} (${result.messages} messages, ${result.checked} example parts checked)`,
    );
  }
}
process.exit(failed ? 1 : 0);
