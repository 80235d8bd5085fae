// Lint: typescript-eslint's recommended rules plus the layering rules of docs/design.md.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'bin/**', '.scratch/**', 'native/*/build/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-control-regex': 'off',
    },
  },
  {
    // Plain Node scripts (the native build): Node's globals.
    files: ['**/*.mjs'],
    languageOptions: { globals: { process: 'readonly' } },
  },
  {
    files: ['src/mail/**', 'src/lib/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['../auth/*', '../smtp/*', '../queue/*', '../delivery/*', '../policy/*', '../cli/*', '../config/*'] }] },
  },
  {
    files: ['src/smtp/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/auth/backends/**', '**/auth/daemon/**'] }] },
  },
  {
    files: ['src/delivery/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/smtp/**'] }] },
  },
);
