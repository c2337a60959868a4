#include "common/metrics.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/grpc_server.h"
#include "common/process.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/text_serializer.h"

namespace bridge {
namespace {

prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     prometheus::MetricType type, double value) {
  prometheus::MetricFamily f{name, help, type, {}};
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(m);
  return f;
}

// The standard process_* metrics (prometheus-cpp 1.0 has no collector for
// them), read from /proc at scrape time.
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> out;
    std::ifstream stat("/proc/self/stat");
    std::string line;
    std::getline(stat, line);
    // Fields after the parenthesised command name; utime is field 14.
    size_t close = line.rfind(')');
    if (close == std::string::npos) return out;
    std::vector<std::string> f = absl::StrSplit(line.substr(close + 2), ' ');
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    double utime = 0, stime = 0, starttime = 0, vsize = 0, rss = 0;
    if (f.size() > 21) {
      (void)absl::SimpleAtod(f[11], &utime);
      (void)absl::SimpleAtod(f[12], &stime);
      (void)absl::SimpleAtod(f[19], &starttime);
      (void)absl::SimpleAtod(f[20], &vsize);
      (void)absl::SimpleAtod(f[21], &rss);
    }
    out.push_back(GaugeFamily("process_cpu_seconds_total", "User and system CPU time",
                              MetricType::Counter, (utime + stime) / ticks));
    out.push_back(GaugeFamily("process_resident_memory_bytes", "Resident memory",
                              MetricType::Gauge, rss * page));
    out.push_back(GaugeFamily("process_virtual_memory_bytes", "Virtual memory",
                              MetricType::Gauge, vsize));
    out.push_back(GaugeFamily("process_start_time_seconds", "Start time since the epoch",
                              MetricType::Gauge, BootTime() + starttime / ticks));
    size_t fds = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      ++fds;
    }
    out.push_back(GaugeFamily("process_open_fds", "Open file descriptors", MetricType::Gauge,
                              static_cast<double>(fds)));
    return out;
  }

 private:
  static double BootTime() {
    std::ifstream in("/proc/stat");
    std::string key;
    double value = 0;
    while (in >> key) {
      if (key == "btime") {
        in >> value;
        return value;
      }
    }
    return 0;
  }
};

struct Metrics {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<ProcessCollector> process = std::make_shared<ProcessCollector>();
};

Metrics& Global() {
  static Metrics* m = new Metrics();
  return *m;
}

}  // namespace

std::shared_ptr<prometheus::Registry> MetricsRegistry() { return Global().registry; }

void RegisterBuildInfo(const std::string& service) {
  prometheus::BuildGauge()
      .Name("bridge_build_info")
      .Help("Build information; always 1")
      .Register(*MetricsRegistry())
      .Add({{"service", service}, {"version", std::string(BridgeVersion())}})
      .Set(1);
}

std::string SerializeMetrics() {
  auto families = Global().registry->Collect();
  auto process = Global().process->Collect();
  families.insert(families.end(), process.begin(), process.end());
  return prometheus::TextSerializer().Serialize(families);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  auto hp = SplitHostPort(listen);
  if (!hp.ok()) return hp.status();
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  try {
    // civetweb wants IPv6 hosts in brackets.
    std::string bind = hp->first.find(':') != std::string::npos
                           ? absl::StrCat("[", hp->first, "]:", hp->second)
                           : absl::StrCat(hp->first, ":", hp->second);
    s->exposer_ = std::make_unique<prometheus::Exposer>(bind, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", listen, ": ",
                                               e.what()));
  }
  s->exposer_->RegisterCollectable(Global().registry);
  s->exposer_->RegisterCollectable(Global().process);
  auto ports = s->exposer_->GetListeningPorts();
  if (ports.empty()) return absl::UnavailableError("metrics: no listening port");
  s->address_ = absl::StrCat(hp->first, ":", ports.front());
  return s;
}

MetricsServer::~MetricsServer() = default;

}  // namespace bridge
