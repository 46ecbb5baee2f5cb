// peft federate serve|join: federated adapter training (docs/FEDERATED.md).
#include <signal.h>

#include "common.h"
#include "io/yaml_json.h"
#include "peft/federated.h"

namespace peft::cli {

void register_federate(CLI::App& app) {
  auto* cmd = app.add_subcommand("federate",
                                 "Federated adapter training: a coordinator aggregates (FedAvg, optionally DP-FedAvg) "
                                 "the adapter updates of clients that train on their own data; only updates leave a "
                                 "client (docs/FEDERATED.md)");
  cmd->footer("Example: peft federate serve --config fed.json   (then on each client:)\n"
              "         peft federate join --server http://127.0.0.1:8765 --config client.json");
  cmd->require_subcommand(1);

  auto* serve = cmd->add_subcommand("serve", "Run the coordinator: rounds of FedAvg over HTTP, resuming from "
                                             "output_dir/state.json after a restart");
  serve->footer("fed.json fields are in docs/FEDERATED.md.\nExample: peft federate serve --config fed.json "
                "--port-file port.txt");
  auto serve_cfg = std::make_shared<std::string>();
  auto port_file = std::make_shared<std::string>();
  serve->add_option("--config,-c", *serve_cfg, "Coordinator config (JSON, or YAML if named .yaml/.yml)")
      ->required()
      ->check(CLI::ExistingFile);
  serve->add_option("--port-file", *port_file, "Write the port listened on here (with port 0: a free one)");
  serve->callback([=] {
    signal(SIGPIPE, SIG_IGN);
    auto cfg = FedServerConfig::from_json(nlohmann::json(read_config_file(*serve_cfg)), *serve_cfg);
    if (!port_file->empty()) cfg.port_file = *port_file;
    run_coordinator(cfg);
  });

  auto* join = cmd->add_subcommand("join", "Run a client: train local_steps on its own data each round and upload "
                                           "the adapter update");
  join->footer("client.json fields are in docs/FEDERATED.md.\nExample: peft federate join --server "
               "http://127.0.0.1:8765 --config client.json");
  auto join_cfg = std::make_shared<std::string>();
  auto server = std::make_shared<std::string>();
  join->add_option("--config,-c", *join_cfg, "Client config (JSON, or YAML if named .yaml/.yml)")
      ->required()
      ->check(CLI::ExistingFile);
  join->add_option("--server", *server, "Coordinator URL, e.g. http://127.0.0.1:8765 (overrides 'server')");
  join->callback([=] {
    signal(SIGPIPE, SIG_IGN);
    auto cfg = FedClientConfig::from_json(nlohmann::json(read_config_file(*join_cfg)), *join_cfg);
    if (!server->empty()) cfg.server = *server;
    run_client(cfg);
  });
}

}  // namespace peft::cli
