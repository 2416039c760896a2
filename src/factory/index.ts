/**
 * factory — VM templates above the VMM: a guest booted once until its agent answered, saved, and
 * restored by every clone (template.ts says how they are made, keyed and kept). TemplateFactory is
 * what a Sandbox is given to start its VM that way; the rest is for `hull` and tests.
 */

export { TemplateFactory } from './factory.js';
export {
  DEFAULT_TEMPLATES_ROOT,
  DEFAULT_TEMPLATE_RAM_ROOT,
  TEMPLATE_FORMAT,
  cloneSpec,
  findTemplate,
  openTemplate,
  templateInputs,
  templateKey,
  type CloneTarget,
  type TemplateImage,
  type TemplateInputs,
  type TemplateListing,
  type TemplateManifest,
  type TemplateRequest,
  type TemplateRoots,
  type VmTemplate,
} from './template.js';
export { createTemplate } from './template-create.js';
export { listTemplates, pruneTemplates, removeTemplate } from './template-store.js';
