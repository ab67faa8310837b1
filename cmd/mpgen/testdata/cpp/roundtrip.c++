// The C++ reference for mpgen's round-trip tests (package types under
// cmd/mpgen/internal/golden): it reads a message that mpgen's code wrote
// and checks every field with the C++ accessors, or builds one with the
// C++ builders for mpgen's code to read. The values are those of
// sample() in sample_test.go; the defaults are types.capnp's.
//
// Usage: roundtrip check-values | check-defaults | check-zero < message
//        roundtrip write-values | write-defaults > message
// A failed check prints a line starting with FAIL; the exit status is 1
// if any did.

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <iostream>
#include <limits>
#include <string>

#include "types.capnp.h"

namespace {

int failures = 0;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::cout << "FAIL line " << __LINE__ << ": " << #cond << std::endl;       \
      ++failures;                                                                \
    }                                                                            \
  } while (0)

bool dataIs(capnp::Data::Reader d, std::initializer_list<uint8_t> want) {
  if (d.size() != want.size()) return false;
  size_t i = 0;
  for (uint8_t b : want) {
    if (d[i++] != b) return false;
  }
  return true;
}

template <typename List, typename T>
bool listIs(List l, std::initializer_list<T> want) {
  if (l.size() != want.size()) return false;
  size_t i = 0;
  for (T v : want) {
    if (!(l[i++] == v)) return false;
  }
  return true;
}

bool textsAre(capnp::List<capnp::Text>::Reader l, std::initializer_list<const char*> want) {
  if (l.size() != want.size()) return false;
  size_t i = 0;
  for (const char* v : want) {
    if (l[i++] != v) return false;
  }
  return true;
}

bool pointIs(Point::Reader p, int32_t x, int32_t y) { return p.getX() == x && p.getY() == y; }

uint64_t bits(double f) {
  uint64_t b;
  std::memcpy(&b, &f, 8);
  return b;
}

// checkValues checks sample(false).
void checkValues(Root::Reader r) {
  auto s = r.getScalars();
  CHECK(s.getBool() == false);
  CHECK(s.getInt8() == -100);
  CHECK(s.getInt16() == 12345);
  CHECK(s.getInt32() == -7);
  CHECK(s.getInt64() == std::numeric_limits<int64_t>::min());
  CHECK(s.getUint8() == 255);
  CHECK(s.getUint16() == 0);
  CHECK(s.getUint32() == 1);
  CHECK(s.getUint64() == std::numeric_limits<uint64_t>::max());
  CHECK(s.getFloat32() == -0.5f);
  CHECK(s.getFloat64() == 1e-300);
  CHECK(s.getColor() == Color::RED);
  CHECK(s.getText() == "text \xe2\x9c\x93");
  CHECK(s.hasData() && s.getData().size() == 0);
  CHECK(s.getTimeout() == 2.5);
  CHECK(s.getInfinity() == -1.25f);
  CHECK(s.getNotANumber() == 0.25);
  CHECK(s.getPlainBool() == true);
  CHECK(s.getPlainInt32() == -1);
  CHECK(s.getPlainFloat64() == 3.141592653589793);
  CHECK(s.getPlainText() == "plain");
  CHECK(dataIs(s.getPlainData(), {0, 255}));
  CHECK(s.getPlainColor() == Color::BLUE);
  CHECK(s.getUseMempool() == false);

  auto l = r.getLists();
  CHECK(l.getVoids().size() == 3);
  CHECK(listIs(l.getBools(), {true, false, true, true, false, false, false, false, true}));
  CHECK(listIs(l.getInt8s(), {int8_t(-1), int8_t(2)}));
  CHECK(listIs(l.getInt16s(), {int16_t(-300)}));
  CHECK(listIs(l.getInt32s(), {1, -2, 3}));
  CHECK(listIs(l.getInt64s(), {std::numeric_limits<int64_t>::max()}));
  CHECK(listIs(l.getUint8s(), {uint8_t(0), uint8_t(255)}));
  CHECK(listIs(l.getUint16s(), {uint16_t(65535)}));
  CHECK(listIs(l.getUint32s(), {uint32_t(7)}));
  CHECK(listIs(l.getUint64s(), {uint64_t(1) << 63}));
  CHECK(listIs(l.getFloat32s(), {1.5f, -2.0f}));
  CHECK(listIs(l.getFloat64s(), {1e100, -3.0}));
  CHECK(textsAre(l.getTexts(), {"a", "ccc"}));
  CHECK(l.getDatas().size() == 2 && dataIs(l.getDatas()[0], {1, 2}) && dataIs(l.getDatas()[1], {3}));
  CHECK(l.getColors().size() == 3 && l.getColors()[0] == Color::BLUE && l.getColors()[1] == Color::RED &&
        uint16_t(l.getColors()[2]) == 7);
  CHECK(l.getPoints().size() == 2 && pointIs(l.getPoints()[0], 1, 2) && pointIs(l.getPoints()[1], -3, 4));
  CHECK(l.getInt32Lists().size() == 3 && listIs(l.getInt32Lists()[0], {1}) && l.getInt32Lists()[1].size() == 0 &&
        listIs(l.getInt32Lists()[2], {2, 3}));
  CHECK(l.getTextLists().size() == 2 && textsAre(l.getTextLists()[0], {"a"}) && textsAre(l.getTextLists()[1], {"b", "c"}));
  CHECK(l.getPointLists().size() == 2 && l.getPointLists()[0].size() == 1 && pointIs(l.getPointLists()[0][0], 1, 1) &&
        l.getPointLists()[1].size() == 0);
  CHECK(!l.hasEchoes());
  CHECK(l.getShapes().size() == 1 && l.getShapes()[0].getName() == "in a list" && l.getShapes()[0].isEmpty());
  CHECK(l.hasUint32sDefault() && l.getUint32sDefault().size() == 0);
  CHECK(textsAre(l.getTextsDefault(), {"z"}));
  CHECK(l.getPointsDefault().size() == 1 && pointIs(l.getPointsDefault()[0], 9, 9));
  CHECK(listIs(l.getBoolsDefault(), {false}));
  CHECK(l.getNestedDefault().size() == 1 && l.getNestedDefault()[0].size() == 0);
  CHECK(l.getColorsDefault().size() == 1 && l.getColorsDefault()[0] == Color::GREEN);

  auto shapes = r.getShapes();
  CHECK(shapes.size() == 5);
  if (shapes.size() == 5) {
    auto c = shapes[0];
    CHECK(c.getName() == "c" && c.isCircle() && c.getCircle() == 2.5);
    CHECK(c.getExtra().isCount() && c.getExtra().getCount() == 0);
    auto sq = shapes[1];
    CHECK(sq.getName() == "s" && sq.isSquare() && sq.getSquare().getSide() == 3 && sq.getSquare().getColor() == Color::RED);
    CHECK(sq.getExtra().isNested() && sq.getExtra().getNested().getDepth() == 0);
    CHECK(sq.getExtra().getNested().getInner().isWord() && sq.getExtra().getNested().getInner().getWord() == "w");
    auto lb = shapes[2];
    CHECK(lb.getName() == "l" && lb.isLabel() && lb.getLabel() == "");
    CHECK(lb.getExtra().isTags() && textsAre(lb.getExtra().getTags(), {"t1", "t2"}));
    auto pt = shapes[3];
    CHECK(pt.getName() == "p" && pt.isPoint() && pointIs(pt.getPoint(), 5, 6));
    CHECK(pt.getExtra().isNone());
    auto em = shapes[4];
    CHECK(!em.hasName() && em.isEmpty());
    CHECK(em.getExtra().isNested() && em.getExtra().getNested().getDepth() == 9);
    CHECK(em.getExtra().getNested().getInner().isSmall() && em.getExtra().getNested().getInner().getSmall() == -3);
  }

  auto g = r.getGenerics();
  auto settings = g.getSettings();
  CHECK(settings.size() == 2 && settings[0].getKey() == "k1" && settings[0].getValue() == "v1" &&
        settings[1].getKey() == "k2" && settings[1].getValue() == "v2");
  auto config = g.getConfig();
  CHECK(config.size() == 1 && config[0].getKey() == "section" && config[0].getValue().size() == 1 &&
        config[0].getValue()[0].getKey() == "opt" && textsAre(config[0].getValue()[0].getValue(), {"x", "y"}));
  CHECK(pointIs(g.getResult().getValue(), 7, 8) && g.getResult().getError() == "none");
  CHECK(g.getExpected().isError() && dataIs(g.getExpected().getError(), {'b', 'a', 'd'}));
  CHECK(g.getUnbound().getKey().getAs<capnp::Text>() == "unbound key");
  CHECK(dataIs(g.getUnbound().getValue().getAs<capnp::Data>(), {5}));
  auto inner = g.getOuter().getInner();
  CHECK(listIs(inner.getValue(), {uint32_t(1), uint32_t(2)}));
  CHECK(inner.getPairs().size() == 1 && inner.getPairs()[0].getKey() == "p" &&
        listIs(inner.getPairs()[0].getValue(), {uint32_t(3)}));
  CHECK(listIs(g.getOuter().getDirect(), {uint32_t(4)}));
  CHECK(!g.hasEchoPair());
  CHECK(g.getPairDefault().getKey() == "dk" && g.getPairDefault().getValue() == "dv");

  auto a = r.getAnys();
  CHECK(pointIs(a.getAny().getAs<Point>(), 11, 12));
  CHECK(pointIs(a.getAnyStruct().as<Point>(), 13, 14));
  auto al = a.getAnyList().as<capnp::List<uint8_t>>();
  std::string alText;
  for (uint8_t c : al) alText.push_back(char(c));
  CHECK(alText == std::string("any list", 9));
  CHECK(!a.hasCap());

  auto d = r.getDefaults();
  CHECK(pointIs(d.getPoint(), 0, 0));
  CHECK(d.getShape().getName() == "d" && d.getShape().isCircle() && d.getShape().getCircle() == 0);
  CHECK(!d.hasScalars());
  CHECK(d.getLists().hasInt32s() && d.getLists().getInt32s().size() == 0);
  CHECK(listIs(d.getLists().getUint32sDefault(), {uint32_t(1), uint32_t(2), uint32_t(3)}));
  CHECK(d.hasText() && d.getText() == "");
}

// checkDefaultScalars checks that s reads as Scalars' defaults.
void checkDefaultScalars(Scalars::Reader s) {
  CHECK(s.getBool() == true);
  CHECK(s.getInt8() == -8);
  CHECK(s.getInt16() == -1616);
  CHECK(s.getInt32() == -323232);
  CHECK(s.getInt64() == -6464646464646464ll);
  CHECK(s.getUint8() == 208);
  CHECK(s.getUint16() == 61616);
  CHECK(s.getUint32() == 3232323232u);
  CHECK(s.getUint64() == 16464646464646464646ull);
  CHECK(s.getFloat32() == 3.25f);
  CHECK(s.getFloat64() == -6.125e100);
  CHECK(s.getColor() == Color::GREEN);
  CHECK(s.getText() == "default text");
  CHECK(dataIs(s.getData(), {1, 2, 3, 4}));
  CHECK(s.getTimeout() == std::numeric_limits<double>::max());
  CHECK(std::isinf(s.getInfinity()) && s.getInfinity() > 0);
  CHECK(std::isnan(s.getNotANumber()));
  CHECK(s.getPlainBool() == false);
  CHECK(s.getPlainInt32() == 0);
  CHECK(s.getPlainFloat64() == 0);
  CHECK(s.getPlainText() == "");
  CHECK(s.getPlainData().size() == 0);
  CHECK(s.getPlainColor() == Color::RED);
  CHECK(s.getUseMempool() == true);
}

// checkDefaultLists checks that l reads as Lists' defaults.
void checkDefaultLists(Lists::Reader l) {
  CHECK(l.getInt32s().size() == 0 && l.getPoints().size() == 0 && l.getTexts().size() == 0);
  CHECK(listIs(l.getUint32sDefault(), {uint32_t(1), uint32_t(2), uint32_t(3)}));
  CHECK(textsAre(l.getTextsDefault(), {"a", "bc"}));
  CHECK(l.getPointsDefault().size() == 2 && pointIs(l.getPointsDefault()[0], 1, 2) && pointIs(l.getPointsDefault()[1], 3, 4));
  CHECK(listIs(l.getBoolsDefault(), {true, false, true}));
  CHECK(l.getNestedDefault().size() == 3 && listIs(l.getNestedDefault()[0], {1}) && l.getNestedDefault()[1].size() == 0 &&
        listIs(l.getNestedDefault()[2], {2, 3}));
  CHECK(l.getColorsDefault().size() == 2 && l.getColorsDefault()[0] == Color::BLUE && l.getColorsDefault()[1] == Color::RED);
}

// checkDefaults checks a Root holding the NewS() values of mpgen's code:
// each reads as its struct's defaults.
void checkDefaults(Root::Reader r) {
  checkDefaultScalars(r.getScalars());
  checkDefaultLists(r.getLists());
  CHECK(r.getShapes().size() == 1);
  auto sh = r.getShapes()[0];
  CHECK(sh.getName() == "" && sh.isCircle() && sh.getCircle() == 1.5 && sh.getExtra().isNone());
  auto g = r.getGenerics();
  CHECK(g.getSettings().size() == 0 && !g.hasResult());
  CHECK(g.getPairDefault().getKey() == "k" && g.getPairDefault().getValue() == "v");
  auto d = r.getDefaults();
  CHECK(pointIs(d.getPoint(), 3, -4));
  CHECK(d.getShape().getName() == "sq" && d.getShape().isSquare() && d.getShape().getSquare().getSide() == 2.5 &&
        d.getShape().getSquare().getColor() == Color::BLUE);
  CHECK(!d.hasScalars());
  CHECK(listIs(d.getLists().getInt32s(), {5, 6}) && textsAre(d.getLists().getTexts(), {"x"}));
  CHECK(d.getText() == "x");
}

// checkZero checks a Root holding Go's zero Scalars and Lists: numbers
// and texts travel as they are, nil pointers read as their defaults.
void checkZero(Root::Reader r) {
  auto s = r.getScalars();
  CHECK(s.getBool() == false && s.getInt8() == 0 && s.getInt16() == 0 && s.getInt32() == 0 && s.getInt64() == 0);
  CHECK(s.getUint8() == 0 && s.getUint16() == 0 && s.getUint32() == 0 && s.getUint64() == 0);
  CHECK(bits(s.getFloat32()) == 0 && bits(s.getFloat64()) == 0 && bits(s.getTimeout()) == 0 && bits(s.getNotANumber()) == 0);
  CHECK(s.getColor() == Color::RED && s.getText() == "" && s.getUseMempool() == false);
  CHECK(!s.hasData() && dataIs(s.getData(), {1, 2, 3, 4}));
  checkDefaultLists(r.getLists());
}

// buildValues builds sample(false).
void buildValues(Root::Builder r) {
  auto s = r.initScalars();
  s.setBool(false);
  s.setInt8(-100);
  s.setInt16(12345);
  s.setInt32(-7);
  s.setInt64(std::numeric_limits<int64_t>::min());
  s.setUint8(255);
  s.setUint16(0);
  s.setUint32(1);
  s.setUint64(std::numeric_limits<uint64_t>::max());
  s.setFloat32(-0.5f);
  s.setFloat64(1e-300);
  s.setColor(Color::RED);
  s.setText("text \xe2\x9c\x93");
  s.initData(0);
  s.setTimeout(2.5);
  s.setInfinity(-1.25f);
  s.setNotANumber(0.25);
  s.setPlainBool(true);
  s.setPlainInt32(-1);
  s.setPlainFloat64(3.141592653589793);
  s.setPlainText("plain");
  auto pd = s.initPlainData(2);
  pd[0] = 0;
  pd[1] = 255;
  s.setPlainColor(Color::BLUE);
  s.setUseMempool(false);

  auto l = r.initLists();
  l.initVoids(3);
  l.setBools({true, false, true, true, false, false, false, false, true});
  l.setInt8s({-1, 2});
  l.setInt16s({-300});
  l.setInt32s({1, -2, 3});
  l.setInt64s({std::numeric_limits<int64_t>::max()});
  l.setUint8s({0, 255});
  l.setUint16s({65535});
  l.setUint32s({7});
  l.setUint64s({uint64_t(1) << 63});
  l.setFloat32s({1.5f, -2.0f});
  l.setFloat64s({1e100, -3.0});
  l.setTexts({"a", "ccc"});
  auto datas = l.initDatas(2);
  auto d0 = datas.init(0, 2);
  d0[0] = 1;
  d0[1] = 2;
  datas.init(1, 1)[0] = 3;
  auto colors = l.initColors(3);
  colors.set(0, Color::BLUE);
  colors.set(1, Color::RED);
  colors.set(2, static_cast<Color>(7));
  auto points = l.initPoints(2);
  points[0].setX(1);
  points[0].setY(2);
  points[1].setX(-3);
  points[1].setY(4);
  auto il = l.initInt32Lists(3);
  il.set(0, {1});
  il.init(1, 0);
  il.set(2, {2, 3});
  auto tl = l.initTextLists(2);
  tl.set(0, {"a"});
  tl.set(1, {"b", "c"});
  auto pl = l.initPointLists(2);
  auto p0 = pl.init(0, 1);
  p0[0].setX(1);
  p0[0].setY(1);
  pl.init(1, 0);
  auto ls = l.initShapes(1);
  ls[0].setName("in a list");
  ls[0].setEmpty();
  l.initUint32sDefault(0);
  l.setTextsDefault({"z"});
  auto pds = l.initPointsDefault(1);
  pds[0].setX(9);
  pds[0].setY(9);
  l.setBoolsDefault({false});
  l.initNestedDefault(1).init(0, 0);
  l.initColorsDefault(1).set(0, Color::GREEN);

  auto shapes = r.initShapes(5);
  shapes[0].setName("c");
  shapes[0].setCircle(2.5);
  shapes[0].getExtra().setCount(0);
  shapes[1].setName("s");
  auto sq = shapes[1].initSquare();
  sq.setSide(3);
  sq.setColor(Color::RED);
  auto nested = shapes[1].getExtra().initNested();
  nested.setDepth(0);
  nested.getInner().setWord("w");
  shapes[2].setName("l");
  shapes[2].setLabel("");
  shapes[2].getExtra().setTags({"t1", "t2"});
  shapes[3].setName("p");
  auto pt = shapes[3].initPoint();
  pt.setX(5);
  pt.setY(6);
  shapes[3].getExtra().setNone();
  shapes[4].setEmpty();
  auto n4 = shapes[4].getExtra().initNested();
  n4.setDepth(9);
  n4.getInner().setSmall(-3);

  auto g = r.initGenerics();
  auto settings = g.initSettings(2);
  settings[0].setKey("k1");
  settings[0].setValue("v1");
  settings[1].setKey("k2");
  settings[1].setValue("v2");
  auto config = g.initConfig(1);
  config[0].setKey("section");
  auto opts = config[0].initValue(1);
  opts[0].setKey("opt");
  auto xy = opts[0].initValue(2);
  xy.set(0, "x");
  xy.set(1, "y");
  auto res = g.initResult();
  auto rp = res.initValue();
  rp.setX(7);
  rp.setY(8);
  res.setError("none");
  auto bad = g.initExpected().initError(3);
  bad[0] = 'b';
  bad[1] = 'a';
  bad[2] = 'd';
  auto unbound = g.initUnbound();
  unbound.getKey().setAs<capnp::Text>("unbound key");
  unbound.getValue().initAs<capnp::Data>(1)[0] = 5;
  auto outer = g.initOuter();
  auto inner = outer.initInner();
  auto v12 = inner.initValue(2);
  v12.set(0, 1);
  v12.set(1, 2);
  auto pairs = inner.initPairs(1);
  pairs[0].setKey("p");
  pairs[0].initValue(1).set(0, 3);
  outer.initDirect(1).set(0, 4);
  auto pdef = g.initPairDefault();
  pdef.setKey("dk");
  pdef.setValue("dv");

  auto a = r.initAnys();
  auto ap = a.getAny().initAs<Point>();
  ap.setX(11);
  ap.setY(12);
  auto as = a.initAnyStructAs<Point>();
  as.setX(13);
  as.setY(14);
  auto al = a.initAnyListAs<capnp::List<uint8_t>>(9);
  const char* text = "any list";
  for (int i = 0; i < 9; i++) al.set(i, uint8_t(text[i]));

  auto d = r.initDefaults();
  auto dp = d.initPoint();
  dp.setX(0);
  dp.setY(0);
  auto ds = d.initShape();
  ds.setName("d");
  ds.setCircle(0);
  auto dl = d.initLists();
  dl.initInt32s(0);
  dl.setUint32sDefault({1, 2, 3});
  dl.setTextsDefault({"a", "bc"});
  auto dpts = dl.initPointsDefault(2);
  dpts[0].setX(1);
  dpts[0].setY(2);
  dpts[1].setX(3);
  dpts[1].setY(4);
  dl.setBoolsDefault({true, false, true});
  auto dn = dl.initNestedDefault(3);
  dn.set(0, {1});
  dn.init(1, 0);
  dn.set(2, {2, 3});
  auto dc = dl.initColorsDefault(2);
  dc.set(0, Color::BLUE);
  dc.set(1, Color::RED);
  d.setText("");
}

// buildDefaults builds a Root whose structs are fresh: nothing set.
void buildDefaults(Root::Builder r) {
  r.initScalars();
  r.initLists();
  r.initShapes(1);
  r.initGenerics();
  r.initAnys();
  r.initDefaults();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: roundtrip check-values|check-defaults|check-zero|write-values|write-defaults" << std::endl;
    return 2;
  }
  std::string mode = argv[1];
  try {
    if (mode.rfind("check-", 0) == 0) {
      capnp::StreamFdMessageReader reader(0);
      auto root = reader.getRoot<Root>();
      if (mode == "check-values") {
        checkValues(root);
      } else if (mode == "check-defaults") {
        checkDefaults(root);
      } else if (mode == "check-zero") {
        checkZero(root);
      } else {
        std::cerr << "unknown mode " << mode << std::endl;
        return 2;
      }
      std::cout << (failures == 0 ? "ok" : "failed") << std::endl;
      return failures == 0 ? 0 : 1;
    }
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<Root>();
    if (mode == "write-values") {
      buildValues(root);
    } else if (mode == "write-defaults") {
      buildDefaults(root);
    } else {
      std::cerr << "unknown mode " << mode << std::endl;
      return 2;
    }
    capnp::writeMessageToFd(1, message);
    return 0;
  } catch (kj::Exception& e) {
    std::cout << "FAIL exception: " << e.getDescription().cStr() << std::endl;
    return 1;
  }
}
