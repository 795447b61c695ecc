// Validates every document of every YAML file given (directories are searched for *.yaml and
// *.yml) against the Kubernetes OpenAPI schemas as packaged by kubernetes-models: types,
// formats, enums and required fields through the package's compiled JSON-schema validators,
// plus unknown fields (as `kubectl apply --validate=strict` rejects them), found from the
// package's generated type declarations. Unknown apiVersion/kind fails. A kustomization.yaml is
// checked for the files it names, and the ConfigMaps it generates are validated too.
//
// Usage: node validate.mjs [--expect-invalid] PATH...
//   --expect-invalid: every document must be invalid (the test that the validator can fail).
// Exit status: 0 when every document is as expected, 1 otherwise, 2 on usage errors.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const modelsDir = path.join(here, "node_modules", "kubernetes-models");
const nodeModules = path.join(here, "node_modules");

// --- unknown fields, from the generated .d.ts files --------------------------------------

const declCache = new Map();

// Parses one generated declaration file: its imports, interfaces (property -> type text)
// and type aliases, and the names it exports them under.
function loadDecl(file) {
  if (declCache.has(file)) return declCache.get(file);
  const text = fs.readFileSync(file, "utf8");
  const imports = new Map();
  for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
    for (const name of m[1].split(",").map((s) => s.trim())) imports.set(name, m[2]);
  }
  const interfaces = new Map();
  for (const m of text.matchAll(/^export interface (\w+)(?: extends [\w, ]+)? \{\n([\s\S]*?)^\}/gm)) {
    const props = new Map();
    const body = m[2].replace(/\/\*\*[\s\S]*?\*\//g, "");
    for (const p of body.matchAll(/^ {4}"([^"]+)"\??: ([\s\S]*?);$/gm)) props.set(p[1], p[2].trim());
    interfaces.set(m[1], props);
  }
  const aliases = new Set();
  for (const m of text.matchAll(/^export declare type (\w+) =/gm)) aliases.add(m[1]);
  const exported = new Map();
  for (const m of text.matchAll(/^export \{ ([^}]+) \};$/gm)) {
    for (const part of m[1].split(",")) {
      const [local, as] = part.trim().split(/\s+as\s+/);
      exported.set(as ?? local, local);
    }
  }
  const decl = { file, imports, interfaces, aliases, exported };
  declCache.set(file, decl);
  return decl;
}

function resolveModule(fromFile, spec) {
  if (spec.startsWith(".")) return path.resolve(path.dirname(fromFile), spec) + ".d.ts";
  return path.join(nodeModules, spec) + ".d.ts";
}

// The property map of the type named `name` in `decl`, or null when it is not an object type
// this check knows (aliases such as Quantity, IntOrString, Time are leaves).
function resolveType(decl, name) {
  const local = decl.exported.get(name) ?? name;
  if (decl.interfaces.has(local)) return { decl, props: decl.interfaces.get(local) };
  if (decl.aliases.has(local)) return null;
  const from = decl.imports.get(name);
  if (!from) return null;
  const file = resolveModule(decl.file, from);
  if (!fs.existsSync(file)) return null;
  return resolveType(loadDecl(file), name);
}

// Walks `value` along the type text `type` declared in `decl`; reports unknown fields.
function checkType(decl, type, value, where, errors) {
  if (value === null || value === undefined) return;
  let m;
  if ((m = type.match(/^Array<(.+)>$/s))) {
    if (Array.isArray(value)) value.forEach((v, i) => checkType(decl, m[1], v, `${where}/${i}`, errors));
    return;
  }
  if ((m = type.match(/^\{\s*\[key: string\]: (.+?);\s*\}$/s))) {
    if (typeof value === "object" && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) checkType(decl, m[1], v, `${where}/${k}`, errors);
    }
    return;
  }
  if (!/^I\w+$/.test(type)) return;  // string, number, unions of literals...
  const t = resolveType(decl, type);
  if (t) checkObject(t.decl, t.props, value, where, errors);
}

function checkObject(decl, props, value, where, errors) {
  if (typeof value !== "object" || Array.isArray(value)) return;  // the schema check reports it
  for (const [k, v] of Object.entries(value)) {
    if (!props.has(k)) {
      errors.push(`${where || "/"}: unknown field "${k}"`);
      continue;
    }
    checkType(decl, props.get(k), v, `${where}/${k}`, errors);
  }
}

// --- kinds --------------------------------------------------------------------------------

async function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
  if (!/^[a-z0-9.]*\/?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Za-z0-9]+$/.test(kind)) return null;
  const dir = path.join(modelsDir, ...apiVersion.split("/"));
  const file = path.join(dir, `${kind}.js`);
  if (!fs.existsSync(file) || !fs.existsSync(path.join(dir, `${kind}.d.ts`))) return null;
  const mod = await import(`kubernetes-models/${apiVersion}/${kind}`);
  const Model = mod[kind];
  if (typeof Model !== "function" || Model.apiVersion !== apiVersion || Model.kind !== kind) return null;
  return { Model, decl: path.join(dir, `${kind}.d.ts`) };
}

async function validateObject(obj) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return ["the document is not a mapping"];
  const model = await modelFor(obj.apiVersion, obj.kind);
  if (!model) return [`unknown apiVersion/kind ${obj.apiVersion}/${obj.kind} (not in the Kubernetes API)`];
  const errors = [];
  try {
    new model.Model(obj).validate();
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    for (const err of e.errors) {
      const params = err.params?.missingProperty ? ` (${err.params.missingProperty})` :
        err.params?.allowedValues ? ` (${err.params.allowedValues.join(", ")})` : "";
      errors.push(`${err.instancePath || "/"}: ${err.message}${params}`);
    }
  }
  const decl = loadDecl(model.decl);
  const props = decl.interfaces.get(decl.exported.get(obj.kind) ?? `I${obj.kind}`) ?? decl.interfaces.get(`I${obj.kind}`);
  if (!props) throw new Error(`no type declaration for ${obj.kind} in ${model.decl}`);
  checkObject(decl, props, obj, "", errors);
  return errors;
}

// --- kustomize ----------------------------------------------------------------------------

const kustomizationFields = new Set(["apiVersion", "kind", "resources", "configMapGenerator",
  "secretGenerator", "images", "namespace", "namePrefix", "nameSuffix", "labels", "commonLabels",
  "commonAnnotations", "patches", "generatorOptions", "components"]);

function checkKustomization(file, obj) {
  const errors = [];
  const dir = path.dirname(file);
  if (obj.apiVersion !== "kustomize.config.k8s.io/v1beta1") errors.push(`apiVersion must be kustomize.config.k8s.io/v1beta1`);
  for (const k of Object.keys(obj)) if (!kustomizationFields.has(k)) errors.push(`/: unknown field "${k}"`);
  const generated = [];
  for (const r of obj.resources ?? []) {
    if (!fs.existsSync(path.join(dir, r))) errors.push(`/resources: ${r} does not exist`);
  }
  for (const [i, g] of (obj.configMapGenerator ?? []).entries()) {
    const data = {};
    for (const f of g.files ?? []) {
      const [key, src] = f.includes("=") ? f.split("=", 2) : [path.basename(f), f];
      const p = path.join(dir, src);
      if (!fs.existsSync(p)) errors.push(`/configMapGenerator/${i}: ${src} does not exist`);
      else data[key] = fs.readFileSync(p, "utf8");
    }
    generated.push({ apiVersion: "v1", kind: "ConfigMap",
      metadata: { name: g.name, ...(g.namespace ? { namespace: g.namespace } : {}) }, data });
  }
  return { errors, generated };
}

// --- main ---------------------------------------------------------------------------------

// Every container image an object names, with where.
function containerImages(obj, where, out) {
  if (Array.isArray(obj)) obj.forEach((v, i) => containerImages(v, `${where}/${i}`, out));
  else if (obj && typeof obj === "object") {
    for (const [k, v] of Object.entries(obj)) {
      if ((k === "containers" || k === "initContainers") && Array.isArray(v)) {
        v.forEach((c, i) => c?.image && out.push({ image: c.image, where: `${where}/${k}/${i}` }));
      }
      containerImages(v, `${where}/${k}`, out);
    }
  }
  return out;
}

function yamlFiles(p) {
  const st = fs.statSync(p);
  if (st.isFile()) return [p];
  return fs.readdirSync(p, { withFileTypes: true })
    .sort((a, b) => a.name.localeCompare(b.name))
    .flatMap((e) => (e.isDirectory() ? yamlFiles(path.join(p, e.name))
      : /\.ya?ml$/.test(e.name) ? [path.join(p, e.name)] : []));
}

async function main() {
  const args = process.argv.slice(2);
  const expectInvalid = args[0] === "--expect-invalid";
  const paths = expectInvalid ? args.slice(1) : args;
  if (paths.length === 0) {
    console.error("usage: node validate.mjs [--expect-invalid] PATH...");
    return 2;
  }
  let checked = 0, wrong = 0;
  const images = [], pinned = [];
  for (const file of paths.flatMap(yamlFiles)) {
    const docs = parseAllDocuments(fs.readFileSync(file, "utf8"));
    const items = [];
    for (const [i, doc] of docs.entries()) {
      const label = `${path.relative(process.cwd(), file)}#${i + 1}`;
      if (doc.errors.length) { items.push({ label, errors: doc.errors.map((e) => `YAML: ${e.message}`) }); continue; }
      const obj = doc.toJS();
      if (obj === null) continue;  // an empty document (a trailing ---)
      if (obj.kind === "Kustomization") {
        const k = checkKustomization(file, obj);
        for (const i of obj.images ?? []) pinned.push({ ...i, label });
        items.push({ label, what: "Kustomization", errors: k.errors });
        for (const g of k.generated) {
          items.push({ label: `${label} configMapGenerator ${g.metadata.name}`, what: "v1/ConfigMap", errors: await validateObject(g) });
        }
        continue;
      }
      containerImages(obj, label, images);
      const name = obj?.metadata?.name ?? "(no name)";
      items.push({ label, what: `${obj?.apiVersion}/${obj?.kind} ${name}`, errors: await validateObject(obj) });
    }
    if (items.length === 0) items.push({ label: file, errors: ["no documents"] });
    for (const it of items) {
      checked++;
      const ok = it.errors.length === 0;
      if (ok === !expectInvalid) {
        console.log(`ok    ${it.label} ${it.what ?? ""}${expectInvalid ? ` rejected: ${it.errors[0]}` : ""}`);
      } else {
        wrong++;
        console.log(`FAIL  ${it.label} ${it.what ?? ""}${expectInvalid ? ": accepted, expected invalid" : ""}`);
        for (const e of it.errors) console.log(`        ${e}`);
      }
    }
  }
  // The images a kustomization pins are named the same way in every file (one place to change).
  for (const p of pinned) {
    const want = `${p.newName ?? p.name}:${p.newTag}`;
    const uses = images.filter((i) => i.image === p.name || i.image.startsWith(`${p.name}:`) || i.image.startsWith(`${p.name}@`));
    const off = uses.filter((i) => i.image !== want);
    checked++;
    if ((off.length === 0) === !expectInvalid) {
      console.log(`ok    image ${want} (${p.label}): named alike in all ${uses.length} containers that use ${p.name}`);
    } else {
      wrong++;
      console.log(`FAIL  image ${want} (${p.label}): ${off.map((i) => `${i.where} uses ${i.image}`).join("; ") || "all alike, expected a mismatch"}`);
    }
  }
  console.log(`${checked - wrong} passed, ${wrong} failed`);
  return wrong === 0 && checked > 0 ? 0 : 1;
}

process.exitCode = await main();
