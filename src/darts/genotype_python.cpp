// Genotype in the DARTS reference implementation's Python notation (genotypes.py):
//   NAME = Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5],
//                   reduce=[...], reduce_concat=range(2, 6))
// Reading accepts what published genotype files hold: single or double quotes, newlines and
// comments anywhere, trailing commas, keyword or positional fields (the namedtuple's order:
// normal, normal_concat, reduce, reduce_concat), concat as a list, range(a, b) or range(b),
// and whole files of assignments from which one genotype is picked by name (following
// aliases such as DARTS = DARTS_V2). The parsed fields go through Genotype::from_json, so both
// notations are validated by the same rules. Nothing is evaluated: only this grammar is read.
#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "cudarts/darts.h"
#include "cudarts/error.h"

namespace cudarts::darts {

namespace {

constexpr int kMaxConcat = 64;  // range() lengths beyond this are not a cell's nodes

class PythonReader {
 public:
  explicit PythonReader(const std::string& text, size_t pos = 0) : t_(text), p_(pos) {}

  // Genotype( fields ) -> {"normal": [[op, in], ...], "normal_concat": [...], ...}
  nlohmann::json genotype_call() {
    expect_word("Genotype");
    expect('(');
    static const char* const order[] = {"normal", "normal_concat", "reduce", "reduce_concat"};
    nlohmann::json j = nlohmann::json::object();
    size_t positional = 0;
    bool keywords = false;
    while (!peek(')')) {
      std::string key;
      const size_t at = p_;
      if (std::isalpha(static_cast<unsigned char>(next_char())) && word_then_equals()) {
        key = word();
        expect('=');
        keywords = true;
        fail_unless(std::find(std::begin(order), std::end(order), key) != std::end(order), at,
                    "field '" + key + "', expected normal, normal_concat, reduce or reduce_concat");
      } else {
        fail_unless(!keywords, at, "a positional field after keyword fields");
        fail_unless(positional < 4, at, "a fifth field; a Genotype has four");
        key = order[positional++];
      }
      fail_unless(!j.contains(key), at, "field '" + key + "' given twice");
      j[key] =
          key.size() > 7 && key.compare(key.size() - 7, 7, "_concat") == 0 ? concat() : genes();
      if (!peek(')')) expect(',');
    }
    expect(')');
    return j;
  }

  // From a whole file: the value assigned to `name` at the top level (the last assignment
  // wins, as in Python); an alias (NAME = OTHER) is followed.
  static nlohmann::json named(const std::string& text, const std::string& name) {
    std::set<std::string> seen;
    std::string want = name;
    for (;;) {
      CUDARTS_INPUT_CHECK(seen.insert(want).second, "genotype: '", name,
                          "' is defined in a cycle of aliases");
      size_t found = std::string::npos;
      for (size_t line = 0; line < text.size();) {
        PythonReader r(text, line);
        const bool top_level =
            line < text.size() && !std::isspace(static_cast<unsigned char>(text[line]));
        if (top_level && r.word_then_equals() && r.word() == want) {
          r.expect('=');
          found = r.p_;
        }
        const size_t eol = text.find('\n', line);
        if (eol == std::string::npos) break;
        line = eol + 1;
      }
      CUDARTS_INPUT_CHECK(found != std::string::npos, "genotype: no assignment '", want,
                          " = ...' at the start of a line");
      PythonReader r(text, found);
      r.skip_space();
      if (r.word_then('(') && r.peek_word() == "Genotype") return r.genotype_call();
      const std::string alias = r.word();
      CUDARTS_INPUT_CHECK(!alias.empty() && !r.peek('('), "genotype: '", want,
                          "' is assigned neither a Genotype(...) nor another name");
      want = alias;
    }
  }

  // A text holding one genotype: Genotype(...), optionally as `NAME = Genotype(...)`, with
  // nothing after it but blanks and comments.
  nlohmann::json single() {
    skip_space();
    if (word_then_equals()) {
      word();
      expect('=');
    }
    skip_space();
    fail_unless(peek_word() == "Genotype", p_,
                "'Genotype(' (to pick one genotype of a genotypes.py, give its name: "
                "--genotype-name)");
    nlohmann::json j = genotype_call();
    skip_space();
    fail_unless(p_ == t_.size(), p_,
                "more text after the Genotype(...) (a file of several genotypes needs a name: "
                "--genotype-name)");
    return j;
  }

 private:
  // [ (op, input), ... ]
  nlohmann::json genes() {
    nlohmann::json a = nlohmann::json::array();
    expect('[');
    while (!peek(']')) {
      const size_t at = p_;
      fail_unless(peek('('), at, "an (op, input) tuple");
      expect('(');
      const std::string op = string();
      expect(',');
      const int64_t in = integer();
      if (peek(',')) expect(',');
      expect(')');
      a.push_back({op, in});
      if (!peek(']')) expect(',');
    }
    expect(']');
    return a;
  }

  // [2, 3, ...] | range(a, b) | range(b) | list(range(...))
  nlohmann::json concat() {
    nlohmann::json a = nlohmann::json::array();
    if (peek('[')) {
      expect('[');
      while (!peek(']')) {
        a.push_back(integer());
        if (!peek(']')) expect(',');
      }
      expect(']');
      return a;
    }
    const size_t at = p_;
    const std::string w = word();
    if (w == "list") {
      expect('(');
      a = concat();
      expect(')');
      return a;
    }
    fail_unless(w == "range", at, "a list of node indices or range(a, b)");
    expect('(');
    int64_t lo = 0, hi = integer();
    if (peek(',')) {
      expect(',');
      if (!peek(')')) {
        lo = hi;
        hi = integer();
      }
    }
    expect(')');
    fail_unless(hi - lo <= kMaxConcat, at, "a range of more than 64 nodes");
    for (int64_t v = lo; v < hi; ++v) a.push_back(v);
    return a;
  }

  std::string string() {
    skip_space();
    const size_t at = p_;
    fail_unless(p_ < t_.size() && (t_[p_] == '\'' || t_[p_] == '"'), at, "a quoted op name");
    const char q = t_[p_++];
    std::string s;
    while (p_ < t_.size() && t_[p_] != q) {
      // Op names are identifiers; anything else (escapes, bytes that are not UTF-8) is
      // refused here, before it reaches the JSON layer.
      const unsigned char ch = static_cast<unsigned char>(t_[p_]);
      fail_unless(std::isalnum(ch) || ch == '_', p_,
                  "an op name of letters, digits and '_' (a DARTS primitive)");
      s += t_[p_++];
    }
    fail_unless(p_ < t_.size(), at, "a closing quote");
    ++p_;
    return s;
  }

  // A non-negative or negative decimal integer of at most 9 digits (indices, not numbers that
  // could overflow).
  int64_t integer() {
    skip_space();
    const size_t at = p_;
    bool neg = false;
    if (p_ < t_.size() && t_[p_] == '-') neg = true, ++p_;
    int64_t v = 0;
    int digits = 0;
    while (p_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[p_]))) {
      fail_unless(++digits <= 9, at, "an integer of at most 9 digits");
      v = v * 10 + (t_[p_++] - '0');
    }
    fail_unless(digits > 0, at, "an integer");
    return neg ? -v : v;
  }

  std::string word() {
    skip_space();
    std::string w;
    while (p_ < t_.size() &&
           (std::isalnum(static_cast<unsigned char>(t_[p_])) || t_[p_] == '_' || t_[p_] == '.'))
      w += t_[p_++];
    return w;
  }
  std::string peek_word() {
    const size_t keep = p_;
    std::string w = word();
    p_ = keep;
    return w;
  }
  // True when a name follows, then `c` (nothing is consumed).
  bool word_then(char c) {
    const size_t keep = p_;
    const bool ok = !word().empty() && peek(c);
    p_ = keep;
    return ok;
  }
  // A name followed by a single '=' (an assignment or keyword, not '==').
  bool word_then_equals() {
    const size_t keep = p_;
    bool ok = !word().empty() && peek('=');
    if (ok) ok = p_ + 1 >= t_.size() || t_[p_ + 1] != '=';
    p_ = keep;
    return ok;
  }

  char next_char() {
    skip_space();
    return p_ < t_.size() ? t_[p_] : '\0';
  }
  bool peek(char c) { return next_char() == c; }
  void expect(char c) {
    const char got = next_char();
    fail_unless(got == c, p_, std::string("'") + c + "'");
    ++p_;
  }
  void expect_word(const char* w) {
    const size_t at = (skip_space(), p_);
    fail_unless(word() == w, at, std::string("'") + w + "'");
  }
  void skip_space() {
    while (p_ < t_.size()) {
      if (std::isspace(static_cast<unsigned char>(t_[p_])) || t_[p_] == '\\') {
        ++p_;
      } else if (t_[p_] == '#') {
        while (p_ < t_.size() && t_[p_] != '\n') ++p_;
      } else {
        break;
      }
    }
  }

  void fail_unless(bool ok, size_t at, const std::string& expected) const {
    if (ok) return;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < t_.size(); ++i) {
      if (t_[i] == '\n')
        ++line, col = 1;
      else
        ++col;
    }
    std::string found = at < t_.size() ? t_.substr(at, 20) : std::string("the end of the text");
    for (char& ch : found)
      if (ch == '\n' || static_cast<unsigned char>(ch) < 32) ch = ' ';
    CUDARTS_INPUT_FAIL("genotype (Python notation), line ", line, " column ", col, ": expected ",
                       expected, ", found '", found, "'");
  }

  const std::string& t_;
  size_t p_;
};

std::string py_genes(const std::vector<std::pair<std::string, int>>& g) {
  std::string s = "[";
  for (size_t i = 0; i < g.size(); ++i)
    s += (i ? ", ('" : "('") + g[i].first + "', " + std::to_string(g[i].second) + ")";
  return s + "]";
}

std::string py_list(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::string Genotype::to_python() const {
  CUDARTS_INPUT_CHECK(reduce_cell.empty(), "genotype: reduce_cell '", reduce_cell,
                      "' has no equivalent in the Python Genotype notation (use JSON)");
  return "Genotype(normal=" + py_genes(normal) + ", normal_concat=" + py_list(normal_concat) +
         ", reduce=" + py_genes(reduce) + ", reduce_concat=" + py_list(reduce_concat) + ")";
}

Genotype Genotype::from_python(const std::string& text, const std::string& name) {
  const nlohmann::json j =
      name.empty() ? PythonReader(text).single() : PythonReader::named(text, name);
  for (const char* key : {"normal", "normal_concat", "reduce", "reduce_concat"})
    CUDARTS_INPUT_CHECK(j.contains(key), "genotype (Python notation): field '", key,
                        "' is missing");
  return from_json(j.dump());
}

Genotype Genotype::parse(const std::string& text, const std::string& name) {
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  if (i < text.size() && text[i] == '{') {
    CUDARTS_INPUT_CHECK(name.empty(), "genotype: a name ('", name,
                        "') selects among the genotypes of a Python file; this is JSON");
    return from_json(text);
  }
  return from_python(text, name);
}

}  // namespace cudarts::darts
