import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

import quickfix.Application;
import quickfix.DefaultMessageFactory;
import quickfix.FieldNotFound;
import quickfix.FileStoreFactory;
import quickfix.Message;
import quickfix.RejectLogon;
import quickfix.Session;
import quickfix.SessionID;
import quickfix.SessionSettings;
import quickfix.SocketAcceptor;
import quickfix.UnsupportedMessageType;
import quickfix.SLF4JLogFactory;
import quickfix.field.AvgPx;
import quickfix.field.ClOrdID;
import quickfix.field.CumQty;
import quickfix.field.CxlRejReason;
import quickfix.field.CxlRejResponseTo;
import quickfix.field.ExecID;
import quickfix.field.ExecType;
import quickfix.field.LastPx;
import quickfix.field.LastQty;
import quickfix.field.LeavesQty;
import quickfix.field.MsgType;
import quickfix.field.OrdRejReason;
import quickfix.field.OrdStatus;
import quickfix.field.OrderID;
import quickfix.field.OrderQty;
import quickfix.field.OrigClOrdID;
import quickfix.field.PossResend;
import quickfix.field.Price;
import quickfix.field.Side;
import quickfix.field.Symbol;
import quickfix.field.Text;
import quickfix.field.TransactTime;
import quickfix.fix44.ExecutionReport;
import quickfix.fix44.OrderCancelReject;

/**
 * A FIX 4.4 acceptor on QuickFIX/J that plays the custodian for the gateway's tests.
 *
 * <p>Rules by symbol: "REJ" is rejected; "HOLD..." is acknowledged and filled only by a FILL
 * command; "LOSE..." drops the first NewOrderSingle of a ClOrdID (a custodian that lost it);
 * any other symbol is acknowledged, then filled in two executions (half, then the rest).
 *
 * <p>Every message in or out is printed on stdout as {@code IN|OUT <fields>} (SOH shown as
 * '|'); commands on stdin: {@code FILL <ClOrdID> <qty> <price>}, {@code STATE},
 * {@code LOGOUT}, {@code QUIT}, each answered on one line starting with its name.
 */
public final class BallastFixAcceptor implements Application {
    private static final BigDecimal DEFAULT_PRICE = new BigDecimal("100");

    private static final class Order {
        final String clOrdId;
        final String orderId;
        final String symbol;
        final char side;
        final BigDecimal quantity;
        final BigDecimal price;
        BigDecimal cumQty = BigDecimal.ZERO;
        BigDecimal notional = BigDecimal.ZERO;
        char status = OrdStatus.NEW;
        int newOrderSingles = 1;

        Order(String clOrdId, String orderId, String symbol, char side, BigDecimal quantity,
                BigDecimal price) {
            this.clOrdId = clOrdId;
            this.orderId = orderId;
            this.symbol = symbol;
            this.side = side;
            this.quantity = quantity;
            this.price = price;
        }

        BigDecimal leaves() {
            return isOpen() ? quantity.subtract(cumQty) : BigDecimal.ZERO;
        }

        BigDecimal avgPx() {
            return cumQty.signum() == 0
                    ? BigDecimal.ZERO
                    : notional.divide(cumQty, 8, RoundingMode.HALF_EVEN);
        }

        boolean isOpen() {
            return status == OrdStatus.NEW || status == OrdStatus.PARTIALLY_FILLED;
        }
    }

    private final PrintStream out;
    private final Map<String, Order> orders = new HashMap<>();
    private final Set<String> dropped = new HashSet<>();
    private final AtomicLong ids = new AtomicLong();
    // ExecIDs and OrderIDs stay unique across runs of the acceptor, as a custodian's do.
    private final String run = Long.toString(System.currentTimeMillis(), 36);
    private volatile SessionID sessionId;

    BallastFixAcceptor(PrintStream out) {
        this.out = out;
    }

    private synchronized void print(String line) {
        out.println(line);
        out.flush();
    }

    private static String show(Message message) {
        return message.toString().replace('\u0001', '|');
    }

    @Override
    public void onCreate(SessionID id) {
        sessionId = id;
    }

    @Override
    public void onLogon(SessionID id) {
        print("LOGON " + id);
    }

    @Override
    public void onLogout(SessionID id) {
        print("LOGOUT " + id);
    }

    @Override
    public void toAdmin(Message message, SessionID id) {
        print("OUT " + show(message));
    }

    @Override
    public void fromAdmin(Message message, SessionID id) throws RejectLogon {
        print("IN " + show(message));
    }

    @Override
    public void toApp(Message message, SessionID id) {
        print("OUT " + show(message));
    }

    @Override
    public void fromApp(Message message, SessionID id)
            throws FieldNotFound, UnsupportedMessageType {
        print("IN " + show(message));
        String type = message.getHeader().getString(MsgType.FIELD);
        synchronized (this) {
            switch (type) {
                case MsgType.ORDER_SINGLE -> onNewOrderSingle(message);
                case MsgType.ORDER_STATUS_REQUEST -> onStatusRequest(message);
                case MsgType.ORDER_CANCEL_REQUEST -> onCancelRequest(message);
                default -> throw new UnsupportedMessageType();
            }
        }
    }

    private void onNewOrderSingle(Message nos) throws FieldNotFound {
        String clOrdId = nos.getString(ClOrdID.FIELD);
        String symbol = nos.getString(Symbol.FIELD);
        char side = nos.getChar(Side.FIELD);
        BigDecimal quantity = nos.getDecimal(OrderQty.FIELD);
        BigDecimal price = nos.isSetField(Price.FIELD) ? nos.getDecimal(Price.FIELD) : DEFAULT_PRICE;
        boolean possResend = nos.isSetField(PossResend.FIELD)
                && nos.getBoolean(PossResend.FIELD);
        Order known = orders.get(clOrdId);
        if (known != null) {
            known.newOrderSingles++;
            if (possResend) {
                // A possible resend of an order we have: report where it stands, do not redo it.
                send(report(known, ExecType.ORDER_STATUS, null, null));
            } else {
                Order copy = new Order(clOrdId, "DUP-" + ids.incrementAndGet(), symbol, side,
                        quantity, price);
                ExecutionReport reject = report(copy, ExecType.REJECTED, null, null);
                reject.set(new OrdStatus(OrdStatus.REJECTED));
                reject.set(new OrdRejReason(OrdRejReason.DUPLICATE_ORDER));
                reject.set(new Text("duplicate ClOrdID " + clOrdId));
                send(reject);
            }
            return;
        }
        if (symbol.startsWith("LOSE") && dropped.add(clOrdId)) {
            print("DROPPED " + clOrdId);
            return;
        }
        Order order = new Order(clOrdId, "O-" + run + "-" + ids.incrementAndGet(), symbol, side, quantity,
                price);
        orders.put(clOrdId, order);
        if (symbol.equals("REJ")) {
            order.status = OrdStatus.REJECTED;
            ExecutionReport reject = report(order, ExecType.REJECTED, null, null);
            reject.set(new OrdRejReason(OrdRejReason.UNKNOWN_SYMBOL));
            reject.set(new Text("symbol REJ is not traded here"));
            send(reject);
            return;
        }
        send(report(order, ExecType.NEW, null, null));
        if (symbol.startsWith("HOLD")) {
            return;
        }
        BigDecimal half = quantity.divide(BigDecimal.valueOf(2), 0, RoundingMode.DOWN);
        if (half.signum() > 0 && half.compareTo(quantity) < 0) {
            fill(order, half, price);
        }
        fill(order, order.leaves(), price);
    }

    private void onStatusRequest(Message request) throws FieldNotFound {
        String clOrdId = request.getString(ClOrdID.FIELD);
        Order order = orders.get(clOrdId);
        if (order == null) {
            Order unknown = new Order(clOrdId, "NONE", request.getString(Symbol.FIELD),
                    request.getChar(Side.FIELD), BigDecimal.ZERO, DEFAULT_PRICE);
            unknown.status = OrdStatus.REJECTED;
            ExecutionReport answer = report(unknown, ExecType.ORDER_STATUS, null, null);
            answer.set(new OrdRejReason(OrdRejReason.UNKNOWN_ORDER));
            answer.set(new Text("Unknown order"));
            copyStatusRequestId(request, answer);
            send(answer);
            return;
        }
        ExecutionReport answer = report(order, ExecType.ORDER_STATUS, null, null);
        copyStatusRequestId(request, answer);
        send(answer);
    }

    private static void copyStatusRequestId(Message request, ExecutionReport answer)
            throws FieldNotFound {
        if (request.isSetField(790)) {
            answer.setString(790, request.getString(790));
        }
    }

    private void onCancelRequest(Message request) throws FieldNotFound {
        String clOrdId = request.getString(ClOrdID.FIELD);
        String origClOrdId = request.getString(OrigClOrdID.FIELD);
        Order order = orders.get(origClOrdId);
        if (order == null || !order.isOpen()) {
            OrderCancelReject reject = new OrderCancelReject(
                    new OrderID(order == null ? "NONE" : order.orderId),
                    new ClOrdID(clOrdId),
                    new OrigClOrdID(origClOrdId),
                    new OrdStatus(order == null ? OrdStatus.REJECTED : order.status),
                    new CxlRejResponseTo(CxlRejResponseTo.ORDER_CANCEL_REQUEST));
            reject.set(new CxlRejReason(order == null
                    ? CxlRejReason.UNKNOWN_ORDER : CxlRejReason.TOO_LATE_TO_CANCEL));
            send(reject);
            return;
        }
        order.status = OrdStatus.CANCELED;
        ExecutionReport canceled = report(order, ExecType.CANCELED, null, null);
        canceled.set(new ClOrdID(clOrdId));
        canceled.set(new OrigClOrdID(origClOrdId));
        send(canceled);
    }

    private void fill(Order order, BigDecimal quantity, BigDecimal price) {
        order.cumQty = order.cumQty.add(quantity);
        order.notional = order.notional.add(quantity.multiply(price));
        order.status = order.cumQty.compareTo(order.quantity) >= 0
                ? OrdStatus.FILLED : OrdStatus.PARTIALLY_FILLED;
        send(report(order, ExecType.TRADE, quantity, price));
    }

    private ExecutionReport report(Order order, char execType, BigDecimal lastQty,
            BigDecimal lastPx) {
        // Quantities and prices as exact decimals (the generated fields take doubles).
        ExecutionReport report = new ExecutionReport();
        report.set(new OrderID(order.orderId));
        report.set(new ExecID("X-" + order.orderId + "-" + ids.incrementAndGet()));
        report.set(new ExecType(execType));
        report.set(new OrdStatus(order.status));
        report.set(new Side(order.side));
        report.setDecimal(LeavesQty.FIELD, order.leaves());
        report.setDecimal(CumQty.FIELD, order.cumQty);
        report.setDecimal(AvgPx.FIELD, order.avgPx());
        report.set(new ClOrdID(order.clOrdId));
        report.set(new Symbol(order.symbol));
        report.setDecimal(OrderQty.FIELD, order.quantity);
        report.set(new TransactTime());
        if (lastQty != null) {
            report.setDecimal(LastQty.FIELD, lastQty);
            report.setDecimal(LastPx.FIELD, lastPx);
        }
        return report;
    }

    private boolean send(Message message) {
        // Sent while the initiator is away, a message is stored and goes out as a resend
        // (PossDupFlag=Y) when the initiator logs on again and asks for the gap.
        Session session = Session.lookupSession(sessionId);
        return session != null && session.send(message);
    }

    private synchronized String command(String line) {
        String[] words = line.trim().split("\\s+");
        Session session = Session.lookupSession(sessionId);
        switch (words[0]) {
            case "FILL": {
                Order order = orders.get(words[1]);
                if (order == null || !order.isOpen()) {
                    return "FILL ERROR no open order " + words[1];
                }
                BigDecimal quantity = new BigDecimal(words[2]);
                if (quantity.signum() <= 0 || quantity.compareTo(order.leaves()) > 0) {
                    return "FILL ERROR quantity " + quantity + " outside (0, " + order.leaves() + "]";
                }
                int seq = session.getExpectedSenderNum();
                fill(order, quantity, new BigDecimal(words[3]));
                return "FILL OK seq=" + seq + " loggedOn=" + session.isLoggedOn();
            }
            case "STATE":
                return "STATE loggedOn=" + session.isLoggedOn()
                        + " nextSender=" + session.getExpectedSenderNum()
                        + " nextTarget=" + session.getExpectedTargetNum();
            case "LOGOUT":
                session.logout("requested by the test");
                return "LOGOUT OK";
            default:
                return "ERROR unknown command " + words[0];
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: BallastFixAcceptor PORT SENDER_COMP_ID TARGET_COMP_ID STORE_DIR");
            System.exit(2);
        }
        String config = String.join("\n",
                "[DEFAULT]",
                "ConnectionType=acceptor",
                "SocketAcceptAddress=127.0.0.1",
                "SocketAcceptPort=" + args[0],
                "NonStopSession=Y",
                "ResetOnLogon=N",
                "UseDataDictionary=Y",
                "DataDictionary=FIX44.xml",
                "FileStorePath=" + args[3],
                "[SESSION]",
                "BeginString=FIX.4.4",
                "SenderCompID=" + args[1],
                "TargetCompID=" + args[2],
                "");
        SessionSettings settings = new SessionSettings(
                new ByteArrayInputStream(config.getBytes(StandardCharsets.UTF_8)));
        BallastFixAcceptor app = new BallastFixAcceptor(System.out);
        SocketAcceptor acceptor = new SocketAcceptor(app, new FileStoreFactory(settings),
                settings, new SLF4JLogFactory(settings), new DefaultMessageFactory());
        acceptor.start();
        app.print("READY " + args[0]);
        BufferedReader in = new BufferedReader(
                new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isBlank()) {
                continue;
            }
            if (line.trim().equals("QUIT")) {
                break;
            }
            try {
                app.print(app.command(line));
            } catch (RuntimeException e) {
                app.print("ERROR " + e);
            }
        }
        acceptor.stop(true);
        app.print("STOPPED");
    }
}
