// Random operations against a plain std::map model, in a zone large enough
// that nothing is evicted: every result must match, and the structure must stay
// sound throughout.
#include <deque>
#include <map>
#include <random>
#include <variant>

#include "dict_fixture.h"

namespace tidegate::shm {
namespace {

struct ModelEntry {
  std::variant<std::string, double, std::deque<std::string>> value;
  int64_t expires = 0;
};

class DictModelTest : public DictFixture {
 protected:
  DictModelTest() : DictFixture(8 * 1024 * 1024) {}

  ModelEntry* live(const std::string& k) {
    auto it = model_.find(k);
    if (it == model_.end()) return nullptr;
    if (it->second.expires != 0 && it->second.expires <= g_fake_now) {
      model_.erase(it);
      return nullptr;
    }
    return &it->second;
  }
  int64_t expiry(int64_t ttl) const { return ttl > 0 ? g_fake_now + ttl : 0; }

  std::map<std::string, ModelEntry> model_;
};

TEST_F(DictModelTest, RandomOperationsMatchAMap) {
  std::mt19937 rng(11);
  std::string out;
  for (int step = 0; step < 20000; step++) {
    std::string k = "k" + std::to_string(rng() % 64);
    int64_t ttl = rng() % 4 == 0 ? 1 + rng() % 50 : 0;
    std::string v(rng() % 300, static_cast<char>('a' + rng() % 26));
    ModelEntry* m = live(k);
    switch (rng() % 8) {
      case 0: {
        ASSERT_EQ(dict_->set(k, Value::ofString(v), ttl).status, Status::kOk);
        model_[k] = {v, expiry(ttl)};
        break;
      }
      case 1: {
        Status s = dict_->add(k, Value::ofNumber(step), ttl).status;
        ASSERT_EQ(s, m ? Status::kExists : Status::kOk);
        if (!m) model_[k] = {double(step), expiry(ttl)};
        break;
      }
      case 2: {
        Status s = dict_->replace(k, Value::ofString(v), ttl).status;
        ASSERT_EQ(s, m ? Status::kOk : Status::kNotFound);
        if (m) *m = {v, expiry(ttl)};
        break;
      }
      case 3: {
        dict_->remove(k);
        model_.erase(k);
        break;
      }
      case 4: {
        double init = 1;
        IncrResult r = dict_->incr(k, 2, &init, ttl);
        if (m && !std::holds_alternative<double>(m->value)) {
          ASSERT_EQ(r.status, Status::kNotANumber);
        } else if (m) {
          ASSERT_EQ(r.value, std::get<double>(m->value) += 2);
        } else {
          ASSERT_EQ(r.value, 3);
          model_[k] = {3.0, expiry(ttl)};
        }
        break;
      }
      case 5: {
        CountResult r = dict_->rpush(k, Value::ofString(v));
        if (m && !std::holds_alternative<std::deque<std::string>>(m->value)) {
          ASSERT_EQ(r.status, Status::kNotAList);
        } else {
          if (!m) m = &(model_[k] = {std::deque<std::string>{}, 0});
          auto& l = std::get<std::deque<std::string>>(m->value);
          l.push_back(v);
          ASSERT_EQ(r.count, static_cast<int64_t>(l.size()));
        }
        break;
      }
      case 6: {
        ReadResult r = dict_->lpop(k, &out);
        if (!m) {
          ASSERT_EQ(r.status, Status::kNotFound);
        } else if (!std::holds_alternative<std::deque<std::string>>(m->value)) {
          ASSERT_EQ(r.status, Status::kNotAList);
        } else {
          auto& l = std::get<std::deque<std::string>>(m->value);
          ASSERT_EQ(out, l.front());
          l.pop_front();
          if (l.empty()) model_.erase(k);
        }
        break;
      }
      default: {
        ReadResult r = dict_->get(k, &out);
        if (!m) {
          ASSERT_EQ(r.status, Status::kNotFound);
        } else if (auto* s = std::get_if<std::string>(&m->value)) {
          ASSERT_EQ(out, *s);
        } else if (auto* d = std::get_if<double>(&m->value)) {
          ASSERT_EQ(r.number, *d);
        } else {
          ASSERT_EQ(r.status, Status::kIsAList);
        }
      }
    }
    g_fake_now += rng() % 3;
    if (step % 1000 == 0) {
      expectSound();
      dict_->flushExpired();
    }
  }
  size_t live_keys = 0;
  for (auto it = model_.begin(); it != model_.end(); ++it) {
    if (it->second.expires == 0 || it->second.expires > g_fake_now) live_keys++;
  }
  EXPECT_EQ(dict_->getKeys().size(), live_keys);
}

}  // namespace
}  // namespace tidegate::shm
