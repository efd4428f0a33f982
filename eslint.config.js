// Lint rules: ESLint's recommended set and typescript-eslint's strict, type-checked set (with the type
// information of tsconfig.json: floating and misused promises, unsafe any, unnecessary conditions...);
// formatting is Prettier's job. Plain JavaScript files (scripts, benchmarks) get the untyped sets only.
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import globals from "globals";

export default tseslint.config(
  { ignores: ["dist/", ".dist-*/", "build/", "node_modules/", ".cache/", "kernel/", "guest/"] },
  js.configs.recommended,
  {
    files: ["**/*.ts"],
    extends: [...tseslint.configs.strictTypeChecked],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // Numbers, booleans and bigints in messages are what they look like.
      "@typescript-eslint/restrict-template-expressions": [
        "error",
        {
          allowNumber: true,
          allowBoolean: true,
          allowRegExp: true,
          allow: [{ from: "lib", name: "bigint" }],
        },
      ],
      "@typescript-eslint/no-confusing-void-expression": [
        "error",
        { ignoreArrowShorthand: true, ignoreVoidReturningFunctions: true },
      ],
      // Indexing an array gives a possibly missing element at run time, which the type system (without
      // noUncheckedIndexedAccess) does not see: the rule would call the checks of guest-chosen indexes
      // (a virtio queue number, a register offset) unnecessary.
      "@typescript-eslint/no-unnecessary-condition": "off",
      // node:test's test() and describe() return promises the runner itself awaits.
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          allowForKnownSafeCalls: [
            {
              from: "package",
              package: "node:test",
              name: ["test", "describe", "it", "suite", "before", "after"],
            },
          ],
        },
      ],
    },
  },
  {
    // Tests look into parsed JSON output and assert on values they just checked exist.
    files: ["test/**/*.ts"],
    rules: {
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-return": "off",
    },
  },
  {
    files: ["**/*.js", "**/*.mjs", "**/*.cjs"],
    extends: [...tseslint.configs.recommended],
  },
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-constant-condition": ["error", { checkLoops: false }],
    },
  },
  {
    // The dashboard's script runs in the browser.
    files: ["web/**/*.js"],
    languageOptions: { globals: { ...globals.browser } },
  },
);
