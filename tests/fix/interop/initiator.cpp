// A FIX 4.4 initiator built on QuickFIX (C++), driven line by line from stdin by
// tests/fix/test_interop.py: the gateway is checked against an engine nobody here wrote (its
// session layer: logon, sequence numbers, resend requests and gap fills, heartbeats, logout).
//
// argv[1]: a QuickFIX session settings file (written by the test), argv[2]: the TargetCompID.
// Each [SESSION] may carry a Password key: it goes into Password (554) of that session's Logon,
// which QuickFIX itself does not fill in.
//
// Commands (stdin, one per line; each is answered "ok <command>" or "error <why>"):
//   send SENDER 35=D|11=a1|55=GBX|...   build the message (MsgType from 35) and send it
//   skip SENDER                         leave out our next MsgSeqNum once (a gap the gateway must repair)
//   rewind SENDER K                     expect K lower than we should (the gateway must resend to us)
//   logout SENDER                       a FIX Logout
//   quit                                stop the initiator and exit
// Output (stdout, one line each, '|' for SOH):
//   ready                 the initiator started (it connects and logs on by itself)
//   in SENDER <message>   a message QuickFIX accepted from the gateway (admin or application)
//   out SENDER <message>  a message QuickFIX sent (admin or application)
//   logon SENDER / logout SENDER
//
// Build: g++ -std=gnu++14 -O0 initiator.cpp -lquickfix -lpthread (Debian's QuickFIX 1.15 headers
// use dynamic exception specifications, which C++17 removed).
#include <quickfix/Application.h>
#include <quickfix/FileStore.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/SocketInitiator.h>

#include <iostream>
#include <mutex>
#include <sstream>
#include <string>

static std::mutex out_mutex;

static void emit(const std::string& kind, const std::string& who, const std::string& text) {
  std::lock_guard<std::mutex> lock(out_mutex);
  std::cout << kind;
  if (!who.empty()) std::cout << ' ' << who;
  if (!text.empty()) std::cout << ' ' << text;
  std::cout << std::endl;  // flushed: the test reads as we go
}

static std::string oneline(const FIX::Message& m) {
  std::string s = m.toString();
  for (char& c : s)
    if (c == '\x01') c = '|';
  return s;
}

class Driver : public FIX::Application {
 public:
  explicit Driver(const FIX::SessionSettings& settings) : settings_(settings) {}
  void onCreate(const FIX::SessionID&) override {}
  void onLogon(const FIX::SessionID& id) override { emit("logon", id.getSenderCompID().getString(), ""); }
  void onLogout(const FIX::SessionID& id) override { emit("logout", id.getSenderCompID().getString(), ""); }
  void toAdmin(FIX::Message& m, const FIX::SessionID& id) override {
    FIX::MsgType type;
    m.getHeader().getField(type);
    if (type.getString() == "A") {
      const FIX::Dictionary& d = settings_.get(id);
      if (d.has("Password")) m.setField(554, d.getString("Password"));
    }
    emit("out", id.getSenderCompID().getString(), oneline(m));
  }
  void fromAdmin(const FIX::Message& m, const FIX::SessionID& id)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue, FIX::RejectLogon) override {
    emit("in", id.getSenderCompID().getString(), oneline(m));
  }
  void toApp(FIX::Message& m, const FIX::SessionID& id) throw(FIX::DoNotSend) override {
    emit("out", id.getSenderCompID().getString(), oneline(m));
  }
  void fromApp(const FIX::Message& m, const FIX::SessionID& id)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue, FIX::UnsupportedMessageType) override {
    emit("in", id.getSenderCompID().getString(), oneline(m));
  }

 private:
  const FIX::SessionSettings& settings_;
};

static FIX::Session* session_of(const std::string& sender, const std::string& target) {
  return FIX::Session::lookupSession(FIX::SessionID("FIX.4.4", sender, target));
}

static std::string run(const std::string& line, const std::string& target) {
  std::istringstream in(line);
  std::string cmd, sender;
  in >> cmd >> sender;
  FIX::Session* s = session_of(sender, target);
  if (!s) return "no session " + sender;
  if (cmd == "send") {
    std::string body;
    std::getline(in >> std::ws, body);
    FIX::Message m;
    std::istringstream fields(body);
    std::string pair;
    while (std::getline(fields, pair, '|')) {
      size_t eq = pair.find('=');
      if (eq == std::string::npos) return "bad field " + pair;
      int tag = std::stoi(pair.substr(0, eq));
      std::string value = pair.substr(eq + 1);
      if (tag == 35)
        m.getHeader().setField(FIX::MsgType(value));
      else
        m.setField(tag, value);
    }
    if (!FIX::Session::sendToTarget(m, FIX::SessionID("FIX.4.4", sender, target))) return "not sent";
    return "";
  }
  if (cmd == "skip") {
    s->setNextSenderMsgSeqNum(s->getExpectedSenderNum() + 1);
    return "";
  }
  if (cmd == "rewind") {
    int k = 0;
    in >> k;
    if (k < 1 || k >= s->getExpectedTargetNum()) return "bad rewind";
    s->setNextTargetMsgSeqNum(s->getExpectedTargetNum() - k);
    return "";
  }
  if (cmd == "logout") {
    s->logout("done");
    return "";
  }
  return "unknown command " + cmd;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: initiator SETTINGS TARGETCOMPID" << std::endl;
    return 2;
  }
  try {
    FIX::SessionSettings settings(argv[1]);
    Driver app(settings);
    // a file store: QuickFIX's memory store finds nothing to resend past a hole (get starts at
    // the first number asked for), which would turn the "skip" test into a gap fill of the order
    FIX::FileStoreFactory store(settings);
    FIX::SocketInitiator initiator(app, store, settings);
    initiator.start();
    emit("ready", "", "");
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line.empty()) continue;
      if (line == "quit") break;
      std::string err;
      try {
        err = run(line, argv[2]);
      } catch (std::exception& e) {
        err = e.what();
      }
      if (err.empty())
        emit("ok", "", line);
      else
        emit("error", "", err + ": " + line);
    }
    initiator.stop(true);
  } catch (std::exception& e) {
    emit("error", "", e.what());
    return 1;
  }
  return 0;
}
