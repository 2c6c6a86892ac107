"""Which tree-sitter grammar reads which file, and the tag query that finds its definitions and references.

Grammars come compiled from ``tree-sitter-language-pack==0.13.0`` (1.x downloads them at run time and
fails offline). Every query names the identifier ``@name`` and the surrounding node ``@def.<kind>`` or
``@ref.<kind>``; a capture on the same node as ``@name`` (``(type_identifier) @name @ref.type``) is allowed.
"""
from __future__ import annotations

import functools
from pathlib import PurePath

from tree_sitter import Language, Parser, Query

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".java": "java",
    ".go": "go",
    ".rs": "rust",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".h++": "cpp", ".ipp": "cpp", ".tpp": "cpp",
    ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby",
    ".php": "php",
}
FILENAMES: dict[str, str] = {"Rakefile": "ruby", "Gemfile": "ruby"}

_PYTHON = r"""
(class_definition name: (identifier) @name) @def.class
(function_definition name: (identifier) @name) @def.function
(module (expression_statement (assignment left: (identifier) @name) @def.constant))
(module (assignment left: (identifier) @name) @def.constant)
(call function: [(identifier) @name (attribute attribute: (identifier) @name)]) @ref.call
(class_definition superclasses: (argument_list [(identifier) @name (attribute attribute: (identifier) @name)])) @ref.class
(decorator [(identifier) @name (attribute attribute: (identifier) @name)
            (call function: [(identifier) @name (attribute attribute: (identifier) @name)])]) @ref.call
(type [(identifier) @name (attribute attribute: (identifier) @name)]) @ref.type
(import_from_statement name: [(dotted_name (identifier) @name .) (aliased_import name: (dotted_name (identifier) @name .))]) @ref.import
"""

_JS_COMMON = r"""
(function_declaration name: (identifier) @name) @def.function
(generator_function_declaration name: (identifier) @name) @def.function
(method_definition name: [(property_identifier) (private_property_identifier)] @name) @def.method
(variable_declarator name: (identifier) @name value: [(arrow_function) (function_expression)]) @def.function
(assignment_expression left: (member_expression property: (property_identifier) @name)
                       right: [(arrow_function) (function_expression)]) @def.function
(pair key: (property_identifier) @name value: [(arrow_function) (function_expression)]) @def.function
(call_expression function: [(identifier) @name (member_expression property: (property_identifier) @name)]) @ref.call
(new_expression constructor: [(identifier) @name (member_expression property: (property_identifier) @name)]) @ref.class
"""

_JAVASCRIPT = _JS_COMMON + r"""
(class_declaration name: (identifier) @name) @def.class
(class_heritage [(identifier) @name (member_expression property: (property_identifier) @name)]) @ref.class
"""

_TYPESCRIPT = _JS_COMMON + r"""
(class_declaration name: (type_identifier) @name) @def.class
(abstract_class_declaration name: (type_identifier) @name) @def.class
(interface_declaration name: (type_identifier) @name) @def.interface
(type_alias_declaration name: (type_identifier) @name) @def.type
(enum_declaration name: (identifier) @name) @def.enum
(function_signature name: (identifier) @name) @def.function
(method_signature name: (property_identifier) @name) @def.method
(abstract_method_signature name: (property_identifier) @name) @def.method
(internal_module name: (identifier) @name) @def.module
(extends_clause value: (identifier) @name) @ref.class
(type_identifier) @name @ref.type
"""

_JAVA = r"""
(class_declaration name: (identifier) @name) @def.class
(record_declaration name: (identifier) @name) @def.class
(interface_declaration name: (identifier) @name) @def.interface
(annotation_type_declaration name: (identifier) @name) @def.interface
(enum_declaration name: (identifier) @name) @def.enum
(method_declaration name: (identifier) @name) @def.method
(constructor_declaration name: (identifier) @name) @def.constructor
(field_declaration declarator: (variable_declarator name: (identifier) @name)) @def.field
(method_invocation name: (identifier) @name) @ref.call
(type_identifier) @name @ref.type
"""

_GO = r"""
(function_declaration name: (identifier) @name) @def.function
(method_declaration name: (field_identifier) @name) @def.method
(type_spec name: (type_identifier) @name) @def.type
(type_alias name: (type_identifier) @name) @def.type
(method_elem name: (field_identifier) @name) @def.method
(source_file (const_declaration (const_spec name: (identifier) @name) @def.constant))
(source_file (var_declaration (var_spec name: (identifier) @name) @def.variable))
(call_expression function: [(identifier) @name (selector_expression field: (field_identifier) @name)]) @ref.call
(type_identifier) @name @ref.type
"""

_RUST = r"""
(function_item name: (identifier) @name) @def.function
(function_signature_item name: (identifier) @name) @def.function
(struct_item name: (type_identifier) @name) @def.class
(union_item name: (type_identifier) @name) @def.class
(enum_item name: (type_identifier) @name) @def.enum
(trait_item name: (type_identifier) @name) @def.interface
(type_item name: (type_identifier) @name) @def.type
(mod_item name: (identifier) @name) @def.module
(macro_definition name: (identifier) @name) @def.macro
(const_item name: (identifier) @name) @def.constant
(static_item name: (identifier) @name) @def.constant
(impl_item type: [(type_identifier) @name (generic_type type: (type_identifier) @name)]) @def.impl
(call_expression function: [(identifier) @name (field_expression field: (field_identifier) @name)
                            (scoped_identifier name: (identifier) @name)]) @ref.call
(macro_invocation macro: (identifier) @name) @ref.call
(token_tree (identifier) @name @ref.call . (token_tree))
(type_identifier) @name @ref.type
"""

_C_COMMON = r"""
(function_definition declarator: (function_declarator declarator: (identifier) @name)) @def.function
(function_definition declarator: (pointer_declarator declarator: (function_declarator declarator: (identifier) @name))) @def.function
(declaration declarator: (function_declarator declarator: (identifier) @name)) @def.prototype
(declaration declarator: (pointer_declarator declarator: (function_declarator declarator: (identifier) @name))) @def.prototype
(struct_specifier name: (type_identifier) @name body: (_)) @def.class
(union_specifier name: (type_identifier) @name body: (_)) @def.class
(enum_specifier name: (type_identifier) @name body: (_)) @def.enum
(type_definition declarator: (type_identifier) @name) @def.type
(preproc_def name: (identifier) @name) @def.macro
(preproc_function_def name: (identifier) @name) @def.macro
(call_expression function: [(identifier) @name (field_expression field: (field_identifier) @name)]) @ref.call
(type_identifier) @name @ref.type
"""

_C = _C_COMMON

_CPP = _C_COMMON + r"""
(function_definition declarator: (function_declarator declarator: [(field_identifier) @name
    (qualified_identifier name: [(identifier) (destructor_name) (operator_name)] @name)
    (destructor_name) @name (operator_name) @name])) @def.function
(function_definition declarator: (reference_declarator (function_declarator declarator: [(identifier) @name
    (qualified_identifier name: (identifier) @name)]))) @def.function
(field_declaration declarator: (function_declarator declarator: (field_identifier) @name)) @def.prototype
(class_specifier name: (type_identifier) @name body: (_)) @def.class
(namespace_definition name: (namespace_identifier) @name) @def.module
(alias_declaration name: (type_identifier) @name) @def.type
(call_expression function: [(qualified_identifier name: (identifier) @name)
                            (template_function name: (identifier) @name)]) @ref.call
"""

_RUBY = r"""
(method name: (_) @name) @def.method
(singleton_method name: (_) @name) @def.method
(class name: [(constant) @name (scope_resolution name: (_) @name)]) @def.class
(module name: [(constant) @name (scope_resolution name: (_) @name)]) @def.module
(assignment left: (constant) @name) @def.constant
(call method: (identifier) @name) @ref.call
(assignment right: (identifier) @name) @ref.call
(body_statement (identifier) @name @ref.call)
(superclass [(constant) @name (scope_resolution name: (constant) @name)]) @ref.class
(constant) @name @ref.constant
"""

_PHP = r"""
(class_declaration name: (name) @name) @def.class
(interface_declaration name: (name) @name) @def.interface
(trait_declaration name: (name) @name) @def.interface
(enum_declaration name: (name) @name) @def.enum
(function_definition name: (name) @name) @def.function
(method_declaration name: (name) @name) @def.method
(const_element (name) @name) @def.constant
(function_call_expression function: [(name) @name (qualified_name (name) @name .)]) @ref.call
(member_call_expression name: (name) @name) @ref.call
(nullsafe_member_call_expression name: (name) @name) @ref.call
(scoped_call_expression name: (name) @name) @ref.call
(object_creation_expression [(name) @name (qualified_name (name) @name .)]) @ref.class
(base_clause [(name) @name (qualified_name (name) @name .)]) @ref.class
(class_interface_clause [(name) @name (qualified_name (name) @name .)]) @ref.class
(named_type [(name) @name (qualified_name (name) @name .)]) @ref.type
"""

QUERIES: dict[str, str] = {
    "python": _PYTHON, "javascript": _JAVASCRIPT, "typescript": _TYPESCRIPT, "tsx": _TYPESCRIPT,
    "java": _JAVA, "go": _GO, "rust": _RUST, "c": _C, "cpp": _CPP, "ruby": _RUBY, "php": _PHP,
}
LANGUAGES: tuple[str, ...] = tuple(QUERIES)


def language_for(path: str | PurePath) -> str | None:
    """Grammar name for a file path, or None when no supported grammar reads it."""
    # String ops, not PurePath: this runs for every file of the repository on every repo-map call.
    name = str(path).rsplit("/", 1)[-1]
    dot = name.rfind(".")
    if dot > 0:
        lang = EXTENSIONS.get(name[dot:].lower())
        if lang:
            return lang
    return FILENAMES.get(name)


@functools.cache
def get_language(name: str) -> Language:
    # Imported here: the language pack loads ~180 MB of grammars lazily, one per language asked for.
    from tree_sitter_language_pack import get_language as _get

    return _get(name)  # type: ignore[arg-type]


def get_parser(name: str) -> Parser:
    """A new parser for ``name`` (parsers are cheap; one per thread or process)."""
    return Parser(get_language(name))


@functools.cache
def get_query(name: str) -> Query:
    """The compiled tag query for ``name``; raises tree_sitter.QueryError if a pattern names a bad node."""
    return Query(get_language(name), QUERIES[name])
