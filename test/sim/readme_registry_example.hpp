// The registry example of the README, compiled and run by registry_api_test.cpp. It runs
// three registry replicas in the simulator (testing::registry_cluster); on real machines
// the same calls work on registry::replica<transport::asio_tcp, storage::file>.
inline void readme_registry_example(std::vector<std::string>& out) {
    namespace rr = raregistry;
    using rr::registry::json;
    rr::testing::registry_cluster cluster(42, 3);  // n1, n2, n3 in the simulator
    cluster.settle();                               // a leader is elected
    auto& n1 = *cluster.at(0).rep;
    auto& n2 = *cluster.at(1).rep;
    rr::testing::sim_registry reg1(n1, "MyApp.Registry");
    rr::testing::sim_registry reg2(n2, "MyApp.Registry");
    reg1.async_create(rr::registry::keys::unique, [&](std::error_code ec) { out.push_back("create: " + ec.message()); });
    cluster.run_until([&] { return out.size() == 1; });

    auto worker = n1.spawn_process({}, {});  // a process of n1 (Elixir: self())
    reg1.as(worker).async_register("unique_key", json("some value"), [&](std::error_code ec, rr::registry::pid owner) {
        out.push_back("register: " + ec.message() + " " + owner.to_string());
    });
    cluster.run_until([&] { return out.size() == 2; });

    reg2.async_lookup("unique_key", [&](std::error_code, std::vector<rr::registry::entry> found) {
        out.push_back("lookup on n2: " + found.at(0).owner.to_string() + " " + found.at(0).value.dump());
    });
    cluster.run_until([&] { return out.size() == 3; });

    reg2.async_register("unique_key", json("other"), [&](std::error_code ec, rr::registry::pid owner) {
        out.push_back("again from n2: " + ec.message() + ", owner " + owner.to_string());
    });
    cluster.run_until([&] { return out.size() == 4; });

    n1.exit_process(worker, "done");  // its registration goes away by itself (process_down)
    cluster.run_until([&] { return n2.state().lookup("MyApp.Registry", "unique_key").empty(); });
    out.push_back("after exit: " + std::to_string(n2.state().count("MyApp.Registry")) + " registrations");
}
