// RoAd's adapter_config.json: HF PEFT 0.21's RoadConfig fields.
#include "peft/road.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& road_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "group_size": 64, "inference_mode": true,
    "init_weights": true, "modules_to_save": null, "peft_type": "ROAD", "peft_version": "0.21.2",
    "revision": null, "target_modules": null, "task_type": null, "variant": "road_1"
  })");
  return j;
}

}  // namespace

RoadConfig RoadConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  RoadConfig c;
  ConfigFields f(j, road_defaults(), "ROAD", where, unknown, c);
  c.variant = f.get<std::string>("variant");
  if (c.variant != "road_1" && c.variant != "road_2" && c.variant != "road_4")
    f.fail("'variant' must be road_1, road_2 or road_4, got '" + c.variant + "'");
  c.group_size = f.get<int64_t>("group_size");
  if (c.group_size <= 0 || c.group_size % 2 != 0 || c.group_size > (int64_t{1} << 24))
    f.fail("'group_size' must be a positive even number, got " + std::to_string(c.group_size));
  c.init_weights = f.get<bool>("init_weights");
  return c;
}

ojson RoadConfig::to_json() const {
  ojson fields;
  fields["variant"] = variant;
  fields["group_size"] = group_size;
  fields["init_weights"] = init_weights;
  return config_json(*this, road_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kRoadRegistered = register_method<RoadConfig>("ROAD");
}  // namespace

}  // namespace peft
