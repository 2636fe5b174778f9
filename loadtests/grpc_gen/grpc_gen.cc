// A small closed-loop gRPC load generator: one fixed, pre-serialized unary request, a fixed
// number of calls in flight, a fixed duration. Built and driven by loadtests/grpc_load.py.
//
//   grpc_gen TARGET METHOD BODY_FILE CONCURRENCY SECONDS TIMEOUT_S THREADS
//   grpc_gen --serve PORT ANSWER_FILE     (the do-nothing server its ceiling is measured on)
//
// Each thread owns a channel (its own HTTP/2 connection) and a completion queue and keeps its
// share of CONCURRENCY calls in flight through grpc::GenericStub, so no protobuf code is needed:
// the request goes out as the bytes of BODY_FILE and the answer is never parsed (only its
// status is read). After one warm call per thread it prints GRPC_READY and waits for a line on
// stdin; then it runs and prints one `GRPC_RESULT {json}` line in the format grpc_load.py's
// workers print: counts, seconds, its CPU time and a histogram of 1 %-wide latency buckets.
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kGrowth = 1.01;  // must match grpc_load.BUCKET_GROWTH
constexpr int kBuckets = 2400;    // 1.01^2400 us is far beyond any timeout

const char* CodeName(grpc::StatusCode code) {
  static const char* names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  int index = static_cast<int>(code);
  return index >= 0 && index <= 16 ? names[index] : "UNKNOWN";
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
         usage.ru_stime.tv_usec / 1e6;
}

struct Call {
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  Clock::time_point sent;
};

struct Worker {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> stub;
  grpc::CompletionQueue queue;
  std::vector<long> buckets = std::vector<long>(kBuckets, 0);
  std::map<std::string, long> errors;
  long requests = 0;
  double total_us = 0.0;
  double max_us = 0.0;
};

class Generator {
 public:
  Generator(std::string method, grpc::ByteBuffer body, double timeout_s)
      : method_(std::move(method)), body_(std::move(body)), timeout_s_(timeout_s) {}

  void Start(Worker& worker) {
    auto* call = new Call;
    call->context.set_deadline(  // gRPC takes only system_clock deadlines
        std::chrono::system_clock::now() +
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::duration<double>(timeout_s_)));
    call->sent = Clock::now();
    call->reader = worker.stub->PrepareUnaryCall(&call->context, method_, body_, &worker.queue);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, call);
  }

  grpc::Status Once(Worker& worker) {
    Start(worker);
    void* tag = nullptr;
    bool ok = false;
    worker.queue.Next(&tag, &ok);
    auto* call = static_cast<Call*>(tag);
    grpc::Status status = call->status;
    delete call;
    return status;
  }

  void Run(Worker& worker, int calls, Clock::time_point deadline) {
    for (int i = 0; i < calls; ++i) Start(worker);
    int in_flight = calls;
    void* tag = nullptr;
    bool ok = false;
    while (in_flight > 0 && worker.queue.Next(&tag, &ok)) {
      auto* call = static_cast<Call*>(tag);
      auto now = Clock::now();
      double us = std::chrono::duration<double, std::micro>(now - call->sent).count();
      int bucket = static_cast<int>(std::log(us < 1.0 ? 1.0 : us) / std::log(kGrowth));
      worker.buckets[bucket < kBuckets ? bucket : kBuckets - 1] += 1;
      worker.total_us += us;
      if (us > worker.max_us) worker.max_us = us;
      worker.requests += 1;
      if (!call->status.ok()) worker.errors[CodeName(call->status.error_code())] += 1;
      delete call;
      if (now < deadline) {
        Start(worker);
      } else {
        --in_flight;
      }
    }
  }

 private:
  std::string method_;
  grpc::ByteBuffer body_;
  double timeout_s_;
};

std::string ReadFile(const char* path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

// Answers every call to any method with the same bytes, from one thread: the cheapest server
// gRPC C++ allows, so that a run against it measures the generator, not the server.
struct EchoCall {
  grpc::GenericServerContext context;
  grpc::GenericServerAsyncReaderWriter stream{&context};
  grpc::ByteBuffer request;
  int state = 0;  // 0 waiting for a call, 1 reading its message, 2 writing, 3 finished
};

int Serve(const std::string& port, const std::string& answer_bytes) {
  grpc::AsyncGenericService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:" + port, grpc::InsecureServerCredentials());
  builder.RegisterAsyncGenericService(&service);
  auto queue = builder.AddCompletionQueue();
  auto server = builder.BuildAndStart();
  if (!server) return 1;
  grpc::Slice slice(answer_bytes);
  grpc::ByteBuffer answer(&slice, 1);
  auto listen = [&] {
    auto* call = new EchoCall;
    service.RequestCall(&call->context, &call->stream, queue.get(), queue.get(), call);
  };
  for (int i = 0; i < 256; ++i) listen();
  std::cout << "serving" << std::endl;
  void* tag = nullptr;
  bool ok = false;
  while (queue->Next(&tag, &ok)) {
    auto* call = static_cast<EchoCall*>(tag);
    if (!ok && call->state == 0) {  // shutting down
      delete call;
      continue;
    }
    switch (call->state) {
      case 0:
        listen();
        call->state = 1;
        call->stream.Read(&call->request, call);
        break;
      case 1:
        call->state = 2;
        call->stream.WriteAndFinish(answer, grpc::WriteOptions(), grpc::Status::OK, call);
        break;
      default:
        delete call;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--serve") return Serve(argv[2], ReadFile(argv[3]));
  if (argc != 8) {
    std::cerr << "usage: grpc_gen TARGET METHOD BODY_FILE CONCURRENCY SECONDS TIMEOUT_S THREADS\n";
    return 64;
  }
  std::string target = argv[1], method = argv[2];
  std::string bytes = ReadFile(argv[3]);
  int concurrency = std::stoi(argv[4]);
  double seconds = std::stod(argv[5]), timeout_s = std::stod(argv[6]);
  int threads = std::max(1, std::min(std::stoi(argv[7]), concurrency));

  grpc::Slice slice(bytes);
  grpc::ByteBuffer body(&slice, 1);
  Generator generator(method, body, timeout_s);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < threads; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per channel
    args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 * 1024 * 1024);
    args.SetInt(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, 64 * 1024 * 1024);
    auto worker = std::make_unique<Worker>();
    worker->channel =
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    worker->stub = std::make_unique<grpc::GenericStub>(worker->channel);
    grpc::Status status = generator.Once(*worker);
    if (!status.ok()) {
      std::cerr << "first call failed: " << CodeName(status.error_code()) << ": "
                << status.error_message() << "\n";
      return 2;
    }
    workers.push_back(std::move(worker));
  }
  std::cout << "GRPC_READY" << std::endl;
  std::string go;
  std::getline(std::cin, go);

  auto started = Clock::now();
  auto deadline = started + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(seconds));
  double cpu_before = CpuSeconds();
  std::vector<std::thread> running;
  for (int i = 0; i < threads; ++i) {
    int share = concurrency / threads + (i < concurrency % threads ? 1 : 0);
    running.emplace_back([&, i, share] { generator.Run(*workers[i], share, deadline); });
  }
  for (auto& thread : running) thread.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
  double cpu = CpuSeconds() - cpu_before;

  std::vector<long> buckets(kBuckets, 0);
  std::map<std::string, long> errors;
  long requests = 0, failed = 0;
  double total_us = 0.0, max_us = 0.0;
  for (auto& worker : workers) {
    for (int b = 0; b < kBuckets; ++b) buckets[b] += worker->buckets[b];
    for (auto& [code, count] : worker->errors) {
      errors[code] += count;
      failed += count;
    }
    requests += worker->requests;
    total_us += worker->total_us;
    if (worker->max_us > max_us) max_us = worker->max_us;
  }
  std::ostringstream out;
  out.precision(17);
  out << "GRPC_RESULT {\"requests\": " << requests << ", \"errors\": " << failed
      << ", \"seconds\": " << elapsed << ", \"cpu_s\": " << cpu << ", \"latency\": {\"buckets\": {";
  bool first = true;
  for (int b = 0; b < kBuckets; ++b) {
    if (buckets[b] == 0) continue;
    out << (first ? "" : ", ") << "\"" << b << "\": " << buckets[b];
    first = false;
  }
  out << "}, \"total_us\": " << total_us << ", \"max_us\": " << max_us << "}, \"error_codes\": {";
  first = true;
  for (auto& [code, count] : errors) {
    out << (first ? "" : ", ") << "\"" << code << "\": " << count;
    first = false;
  }
  out << "}}";
  std::cout << out.str() << std::endl;
  for (auto& worker : workers) worker->queue.Shutdown();
  return 0;
}
