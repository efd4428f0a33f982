// Errors of the introspection socket (a bad --introspect value, no tool where one was named).
import { InputError } from "../errors.js";

export class IntrospectionError extends InputError {}
