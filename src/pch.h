// Precompiled header for the library and tools: the heavy LibTorch headers, parsed once.
#pragma once
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>
