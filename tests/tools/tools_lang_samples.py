"""Small real-looking three-file projects, one per supported language, for the navigation tests.

Each project has ``util`` (a helper everyone calls), ``store`` (a class with a method, and a function) and
``app`` (calls both; mentions the method in a comment, which find_references must skip).
"""
from dataclasses import dataclass, field


@dataclass
class Sample:
    lang: str
    files: dict[str, str]
    store: str  # path of the file that defines cls, method, func
    app: str
    cls: str
    method: str
    func: str
    helper: str
    defs: list[tuple[str, str, str]]  # (name, kind, text on its first line) in the store file
    outline: list[tuple[str, int]]  # (name, depth) in the store file, in order
    qualified: str | None = None  # Class.method spelling find_definition resolves
    extra: dict = field(default_factory=dict)


PY = Sample(
    "python",
    {
        "pkg/util.py": "def format_record(value):\n    return str(value)\n",
        "pkg/store.py": '''from pkg.util import format_record


class RecordStore:
    """Keeps records in memory."""

    def __init__(self):
        self.items = {}

    def save_record(self, key, value):
        self.items[key] = format_record(value)
        return key


def open_store():
    return RecordStore()
''',
        "pkg/app.py": '''from pkg.store import open_store
from pkg.util import format_record


# save_record is called below
def main():
    store = open_store()
    store.save_record("a", 1)
    print(format_record(2), "save_record")
''',
    },
    "pkg/store.py", "pkg/app.py", "RecordStore", "save_record", "open_store", "format_record",
    [("RecordStore", "class", "class RecordStore"), ("save_record", "function", "def save_record"),
     ("open_store", "function", "def open_store")],
    [("RecordStore", 0), ("__init__", 1), ("save_record", 1), ("open_store", 0)],
    "RecordStore.save_record",
)

JS_STORE = '''const { formatRecord } = require('./util');

class RecordStore {
  constructor() {
    this.items = new Map();
  }

  saveRecord(key, value) {
    this.items.set(key, formatRecord(value));
    return key;
  }
}

function openStore() {
  return new RecordStore();
}

module.exports = { RecordStore, openStore };
'''
JS_APP = '''const { openStore } = require('./store');
const { formatRecord } = require('./util');

// saveRecord is called below
function main() {
  const store = openStore();
  store.saveRecord('a', 1);
  console.log(formatRecord(2), "saveRecord");
}
'''
JS = Sample(
    "javascript",
    {"src/util.js": "function formatRecord(value) {\n  return String(value);\n}\nmodule.exports = { formatRecord };\n",
     "src/store.js": JS_STORE, "src/app.js": JS_APP},
    "src/store.js", "src/app.js", "RecordStore", "saveRecord", "openStore", "formatRecord",
    [("RecordStore", "class", "class RecordStore"), ("saveRecord", "method", "saveRecord(key"),
     ("openStore", "function", "function openStore")],
    [("RecordStore", 0), ("constructor", 1), ("saveRecord", 1), ("openStore", 0)],
    "RecordStore.saveRecord",
)

TS = Sample(
    "typescript",
    {
        "src/util.ts": "export function formatRecord(value: number): string {\n  return String(value);\n}\n",
        "src/store.ts": '''import { formatRecord } from "./util";

export interface Store {
  saveRecord(key: string, value: number): string;
}

export class RecordStore implements Store {
  private items = new Map<string, string>();

  saveRecord(key: string, value: number): string {
    this.items.set(key, formatRecord(value));
    return key;
  }
}

export function openStore(): RecordStore {
  return new RecordStore();
}
''',
        "src/app.ts": '''import { openStore } from "./store";
import { formatRecord } from "./util";

// saveRecord is called below
export function main(): void {
  const store = openStore();
  store.saveRecord("a", 1);
  console.log(formatRecord(2), "saveRecord");
}
''',
    },
    "src/store.ts", "src/app.ts", "RecordStore", "saveRecord", "openStore", "formatRecord",
    [("Store", "interface", "export interface Store"), ("RecordStore", "class", "export class RecordStore"),
     ("saveRecord", "method", "saveRecord(key: string, value: number): string {"),
     ("openStore", "function", "export function openStore")],
    [("Store", 0), ("saveRecord", 1), ("RecordStore", 0), ("saveRecord", 1), ("openStore", 0)],
    "RecordStore.saveRecord",
)

JAVA = Sample(
    "java",
    {
        "src/demo/Util.java": '''package demo;

public final class Util {
    public static String formatRecord(int value) {
        return Integer.toString(value);
    }
}
''',
        "src/demo/RecordStore.java": '''package demo;

import java.util.HashMap;
import java.util.Map;

public class RecordStore {
    private final Map<String, String> items = new HashMap<>();

    public String saveRecord(String key, int value) {
        items.put(key, Util.formatRecord(value));
        return key;
    }

    public static RecordStore openStore() {
        return new RecordStore();
    }
}
''',
        "src/demo/App.java": '''package demo;

public class App {
    // saveRecord is called below
    public static void main(String[] args) {
        RecordStore store = RecordStore.openStore();
        store.saveRecord("a", 1);
        System.out.println(Util.formatRecord(2) + "saveRecord");
    }
}
''',
    },
    "src/demo/RecordStore.java", "src/demo/App.java", "RecordStore", "saveRecord", "openStore", "formatRecord",
    [("RecordStore", "class", "public class RecordStore"), ("saveRecord", "method", "public String saveRecord"),
     ("openStore", "method", "public static RecordStore openStore")],
    [("RecordStore", 0), ("items", 1), ("saveRecord", 1), ("openStore", 1)],
    "RecordStore.saveRecord",
)

GO = Sample(
    "go",
    {
        "demo/util.go": 'package demo\n\nimport "fmt"\n\nfunc FormatRecord(v int) string {\n\treturn fmt.Sprint(v)\n}\n',
        "demo/store.go": '''package demo

// RecordStore keeps records in memory.
type RecordStore struct {
	items map[string]string
}

func (s *RecordStore) SaveRecord(key string, value int) string {
	s.items[key] = FormatRecord(value)
	return key
}

func OpenStore() *RecordStore {
	return &RecordStore{items: map[string]string{}}
}
''',
        "demo/app.go": '''package demo

import "fmt"

// SaveRecord is called below
func Main() {
	store := OpenStore()
	store.SaveRecord("a", 1)
	fmt.Println(FormatRecord(2), "SaveRecord")
}
''',
    },
    "demo/store.go", "demo/app.go", "RecordStore", "SaveRecord", "OpenStore", "FormatRecord",
    [("RecordStore", "type", "type RecordStore struct"), ("SaveRecord", "method", "func (s *RecordStore) SaveRecord"),
     ("OpenStore", "function", "func OpenStore")],
    [("RecordStore", 0), ("SaveRecord", 0), ("OpenStore", 0)],
)

RUST = Sample(
    "rust",
    {
        "src/util.rs": "pub fn format_record(v: i32) -> String {\n    v.to_string()\n}\n",
        "src/store.rs": '''use crate::util::format_record;
use std::collections::HashMap;

pub struct RecordStore {
    items: HashMap<String, String>,
}

impl RecordStore {
    pub fn save_record(&mut self, key: &str, value: i32) -> String {
        self.items.insert(key.to_string(), format_record(value));
        key.to_string()
    }
}

pub fn open_store() -> RecordStore {
    RecordStore { items: HashMap::new() }
}
''',
        "src/app.rs": '''use crate::store::open_store;
use crate::util::format_record;

// save_record is called below
pub fn main() {
    let mut store = open_store();
    store.save_record("a", 1);
    println!("{} {}", format_record(2), "save_record");
}
''',
    },
    "src/store.rs", "src/app.rs", "RecordStore", "save_record", "open_store", "format_record",
    [("RecordStore", "class", "pub struct RecordStore"), ("save_record", "function", "pub fn save_record"),
     ("open_store", "function", "pub fn open_store")],
    [("RecordStore", 0), ("RecordStore", 0), ("save_record", 1), ("open_store", 0)],
    "RecordStore::save_record",
)

C = Sample(
    "c",
    {
        "src/util.c": '#include <stdio.h>\n\nint format_record(int value) {\n    return value * 2;\n}\n',
        "src/store.c": '''#include "util.h"

struct record_store {
    int count;
};

int save_record(struct record_store *store, const char *key, int value) {
    store->count += 1;
    return format_record(value);
}

struct record_store *open_store(void) {
    static struct record_store store;
    return &store;
}
''',
        "src/app.c": '''#include "store.h"

/* save_record is called below */
int main(void) {
    struct record_store *store = open_store();
    save_record(store, "a", 1);
    return format_record(2) > 0 ? 0 : "save_record"[0];
}
''',
    },
    "src/store.c", "src/app.c", "record_store", "save_record", "open_store", "format_record",
    [("record_store", "class", "struct record_store {"), ("save_record", "function", "int save_record"),
     ("open_store", "function", "struct record_store *open_store")],
    [("record_store", 0), ("save_record", 0), ("open_store", 0)],
)

CPP = Sample(
    "cpp",
    {
        "src/util.hpp": '#pragma once\n#include <string>\n\nnamespace demo {\ninline std::string formatRecord(int v) { return std::to_string(v); }\n}  // namespace demo\n',
        "src/store.cpp": '''#include <map>
#include <string>
#include "util.hpp"

namespace demo {

class RecordStore {
 public:
  std::string saveRecord(const std::string& key, int value) {
    items_[key] = formatRecord(value);
    return key;
  }

 private:
  std::map<std::string, std::string> items_;
};

RecordStore openStore() { return RecordStore(); }

}  // namespace demo
''',
        "src/app.cpp": '''#include "store.hpp"

// saveRecord is called below
int main() {
  auto store = demo::openStore();
  store.saveRecord("a", 1);
  return demo::formatRecord(2).size() > 0 ? 0 : std::string("saveRecord").size();
}
''',
    },
    "src/store.cpp", "src/app.cpp", "RecordStore", "saveRecord", "openStore", "formatRecord",
    [("demo", "module", "namespace demo {"), ("RecordStore", "class", "class RecordStore {"),
     ("saveRecord", "function", "std::string saveRecord"), ("openStore", "function", "RecordStore openStore()")],
    [("demo", 0), ("RecordStore", 1), ("saveRecord", 2), ("openStore", 1)],
    "RecordStore::saveRecord",
)

RUBY = Sample(
    "ruby",
    {
        "lib/util.rb": "module Util\n  def self.format_record(value)\n    value.to_s\n  end\nend\n",
        "lib/store.rb": '''require_relative "util"

class RecordStore
  def initialize
    @items = {}
  end

  def save_record(key, value)
    @items[key] = Util.format_record(value)
    key
  end
end

def open_store
  RecordStore.new
end
''',
        "lib/app.rb": '''require_relative "store"

# save_record is called below
def main
  store = open_store
  store.save_record("a", 1)
  puts Util.format_record(2), "save_record"
end
''',
    },
    "lib/store.rb", "lib/app.rb", "RecordStore", "save_record", "open_store", "format_record",
    [("RecordStore", "class", "class RecordStore"), ("save_record", "method", "def save_record"),
     ("open_store", "method", "def open_store")],
    [("RecordStore", 0), ("initialize", 1), ("save_record", 1), ("open_store", 0)],
    "RecordStore#save_record",
)

PHP = Sample(
    "php",
    {
        "src/util.php": "<?php\nfunction formatRecord(int $value): string\n{\n    return (string) $value;\n}\n",
        "src/store.php": '''<?php
require_once 'util.php';

class RecordStore
{
    private array $items = [];

    public function saveRecord(string $key, int $value): string
    {
        $this->items[$key] = formatRecord($value);
        return $key;
    }
}

function openStore(): RecordStore
{
    return new RecordStore();
}
''',
        "src/app.php": '''<?php
require_once 'store.php';

// saveRecord is called below
function main(): void
{
    $store = openStore();
    $store->saveRecord('a', 1);
    echo formatRecord(2), "saveRecord";
}
''',
    },
    "src/store.php", "src/app.php", "RecordStore", "saveRecord", "openStore", "formatRecord",
    [("RecordStore", "class", "class RecordStore"), ("saveRecord", "method", "public function saveRecord"),
     ("openStore", "function", "function openStore")],
    [("RecordStore", 0), ("saveRecord", 1), ("openStore", 0)],
    "RecordStore::saveRecord",
)

SAMPLES = {s.lang: s for s in (PY, JS, TS, JAVA, GO, RUST, C, CPP, RUBY, PHP)}


# One file per language with the definition forms an agent asks about; every name listed must be found as a
# definition. The benchmark runs Aider's tag queries on the same files (benchmarks/repomap.py, "coverage").
CONSTRUCTS: dict[str, tuple[str, str, list[str]]] = {
    "python": ("shapes.py", '''import functools

MAX_SIDES = 12
Point = tuple


class Shape:
    class Meta:
        abstract = True

    @property
    def area(self):
        return 0

    @functools.cache
    def scaled(self, k):
        return k


async def load_shapes(path):
    return []
''', ["MAX_SIDES", "Point", "Shape", "Meta", "area", "scaled", "load_shapes"]),
    "javascript": ("shapes.js", '''export const MAX_SIDES = 12;
export const area = (s) => s.w * s.h;
const helpers = {
  scale(s, k) { return s * k; },
  clamp: function (v) { return v; },
};
export default class Shape {
  #sides = 0;
  perimeter() { return 0; }
  static of(w) { return new Shape(w); }
  get name() { return "shape"; }
}
Shape.prototype.describe = function () { return "a shape"; };
function* generateShapes() { yield 1; }
''', ["area", "scale", "clamp", "Shape", "perimeter", "of", "name", "describe", "generateShapes"]),
    "typescript": ("shapes.ts", '''export interface Sized { size(): number; }
export type Area = number;
export enum Kind { Square, Circle }
export abstract class Shape implements Sized {
  abstract area(): Area;
  size(): number { return 1; }
}
export namespace Geometry { export const PI = 3.14; }
export function makeShape(kind: Kind): Shape | null { return null; }
export const scale = (s: Shape, k: number): number => k;
declare function externalArea(s: Shape): Area;
''', ["Sized", "size", "Area", "Kind", "Shape", "area", "Geometry", "makeShape", "scale", "externalArea"]),
    "java": ("Shapes.java", '''package demo;

public interface Sized { int size(); }

enum Kind { SQUARE, CIRCLE; }

record Point(int x, int y) {}

@interface Checked {}

public class Shapes {
    public static final int MAX_SIDES = 12;
    public Shapes() {}
    public <T> T pick(T a) { return a; }
    static class Inner { void run() {} }
}
''', ["Sized", "size", "Kind", "Point", "Checked", "Shapes", "MAX_SIDES", "pick", "Inner", "run"]),
    "go": ("shapes.go", '''package shapes

const MaxSides = 12

var DefaultKind = "square"

type Area = float64

type Sized interface {
	Size() int
}

type Shape struct{ w, h int }

func (s Shape) Size() int { return s.w * s.h }

func NewShape(w, h int) Shape { return Shape{w, h} }

func Map[T any](xs []T, f func(T) T) []T { return xs }
''', ["MaxSides", "DefaultKind", "Area", "Sized", "Size", "Shape", "NewShape", "Map"]),
    "rust": ("shapes.rs", '''pub const MAX_SIDES: u32 = 12;
static mut COUNT: u32 = 0;
pub type Area = f64;
pub trait Sized2 { fn size(&self) -> u32; }
pub enum Kind { Square, Circle }
pub struct Shape<T> { w: T }
impl<T> Shape<T> { pub fn new(w: T) -> Self { Shape { w } } }
impl<T> Sized2 for Shape<T> { fn size(&self) -> u32 { 1 } }
pub mod geometry { pub fn pi() -> f64 { 3.14 } }
macro_rules! square { ($x:expr) => { $x * $x }; }
union Bits { i: u32, f: f32 }
''', ["MAX_SIDES", "COUNT", "Area", "Sized2", "size", "Kind", "Shape", "new", "geometry", "pi", "square", "Bits"]),
    "c": ("shapes.c", '''#include <stdlib.h>
#define MAX_SIDES 12
#define SQUARE(x) ((x) * (x))
typedef struct shape { int w, h; } shape_t;
enum kind { SQUARE_KIND, CIRCLE_KIND };
union bits { int i; float f; };
int area(const shape_t *s);
static inline int perimeter(const shape_t *s) { return 2 * (s->w + s->h); }
shape_t *new_shape(int w, int h) { shape_t *s = malloc(sizeof *s); return s; }
int area(const shape_t *s) { return s->w * s->h; }
''', ["MAX_SIDES", "SQUARE", "shape", "shape_t", "kind", "bits", "area", "perimeter", "new_shape"]),
    "cpp": ("shapes.cpp", '''#include <vector>
namespace geo {
template <typename T>
class Shape {
 public:
  Shape() = default;
  virtual ~Shape() {}
  virtual T area() const = 0;
  bool operator==(const Shape& o) const { return true; }
  int sides() const;
};
template <typename T>
int Shape<T>::sides() const { return 4; }
struct Point { int x, y; };
using Points = std::vector<Point>;
enum class Kind { Square, Circle };
Points make_points(int n) { return Points(n); }
}  // namespace geo
''', ["geo", "Shape", "area", "sides", "Point", "Points", "Kind", "make_points"]),
    "ruby": ("shapes.rb", '''module Geometry
  MAX_SIDES = 12

  class Shape
    attr_reader :sides

    def initialize(sides)
      @sides = sides
    end

    def self.square
      new(4)
    end

    def area = 0

    def ==(other)
      sides == other.sides
    end
  end
end

class Geometry::Circle < Geometry::Shape
end
''', ["Geometry", "MAX_SIDES", "Shape", "initialize", "square", "area", "Circle"]),
    "php": ("shapes.php", '''<?php
namespace Geo;

const MAX_SIDES = 12;

interface Sized { public function size(): int; }

trait Named { public function name(): string { return "shape"; } }

enum Kind: string { case Square = "s"; }

abstract class Shape implements Sized {
    use Named;
    const KIND = "abstract";
    abstract public function area(): float;
    public static function make(): static { return new static(); }
}

function perimeter(Shape $s): int { return 0; }
''', ["MAX_SIDES", "Sized", "size", "Named", "name", "Kind", "Shape", "KIND", "area", "make", "perimeter"]),
}
