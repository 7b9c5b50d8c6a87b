import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.postgresql.util.PSQLException;
import org.postgresql.util.ServerErrorMessage;

/**
 * A JDBC application run through pgwarden by test/integration/real-client-jdbc.test.ts, with the
 * Debian PostgreSQL JDBC driver: java -cp /usr/share/java/postgresql.jar JdbcClient.java HOST PORT
 * DIRECT_HOST DIRECT_PORT DATABASE APPLICATION
 *
 * It uses the driver's defaults (autocommit, sslmode=prefer so it starts with an SSLRequest,
 * extended protocol for every statement, server-side named statements from the 5th execution
 * of a PreparedStatement, binary results for those) and prints one JSON line per step with what
 * the application saw: each value as [Java class, getString()], warnings (notices), errors with
 * SQLSTATE. The DIRECT_* arguments point at PostgreSQL itself, for comparing values.
 */
public class JdbcClient {
    static final String MASKED_QUERY = "SELECT id, name, email, ssn, credit_limit, balance, joined FROM customers ORDER BY id";

    static Connection proxy;
    static Connection direct;
    /** UTF-8 whatever the locale (the test runs programs with LC_ALL=C). */
    static final PrintStream OUT = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);

    public static void main(String[] args) throws Exception {
        String host = args[0], port = args[1], directHost = args[2], directPort = args[3], db = args[4], app = args[5];
        proxy = connect("jdbc:postgresql://" + host + ":" + port + "/" + db, app, false);
        direct = connect("jdbc:postgresql://" + directHost + ":" + directPort + "/" + db, app, false);
        Connection simple = connect("jdbc:postgresql://" + host + ":" + port + "/" + db, app, true);

        step("connect", () -> {
            try (Statement st = proxy.createStatement();
                 ResultSet rs = st.executeQuery("SELECT current_user, current_database(), current_setting('application_name'), current_setting('server_version')")) {
                rs.next();
                String directVersion;
                try (Statement ds = direct.createStatement(); ResultSet drs = ds.executeQuery("SHOW server_version")) {
                    drs.next();
                    directVersion = drs.getString(1);
                }
                emit("connect", "user", str(rs.getString(1)), "database", str(rs.getString(2)), "application", str(rs.getString(3)),
                        "server_version", str(rs.getString(4)), "direct_server_version", str(directVersion),
                        "driver_server_version", str(proxy.getMetaData().getDatabaseProductVersion()));
            }
        });

        step("simple", () -> {
            // preferQueryMode=simple: this connection sends Query messages, not Parse/Bind/Execute.
            try (Statement st = simple.createStatement();
                 ResultSet rs = st.executeQuery("SELECT 1 + 1 AS two, 'h\u00e9llo w\u00f6rld' AS greeting, NULL::int AS nothing")) {
                emit("simple", "columns", columns(rs), "rows", rows(rs));
            }
        });

        step("prepared", () -> {
            // Seven executions of one PreparedStatement: unnamed statements at first, then (from the
            // 5th, prepareThreshold) a named server-side statement reused with binary results.
            List<String> runs = new ArrayList<>();
            try (PreparedStatement ps = proxy.prepareStatement("SELECT id, title, price FROM products WHERE id = ?")) {
                int[] ids = {1, 2, 3, 1, 2, 3, 1};
                for (int id : ids) {
                    ps.setInt(1, id);
                    try (ResultSet rs = ps.executeQuery()) {
                        runs.add(rows(rs));
                    }
                }
            }
            String names;
            try (Statement st = proxy.createStatement(); ResultSet rs = st.executeQuery("SELECT name FROM pg_prepared_statements ORDER BY name")) {
                names = rows(rs);
            }
            emit("prepared", "runs", "[" + String.join(",", runs) + "]", "server_statements", names);
        });

        step("masked", () -> {
            String proxyRows = null, proxyCols = null;
            List<String> repeated = new ArrayList<>();
            try (PreparedStatement ps = proxy.prepareStatement(MASKED_QUERY)) {
                for (int i = 0; i < 6; i++) {
                    try (ResultSet rs = ps.executeQuery()) {
                        if (i == 0) {
                            proxyCols = columns(rs);
                            proxyRows = rows(rs);
                        } else {
                            repeated.add(rows(rs));
                        }
                    }
                }
            }
            String directRows;
            try (PreparedStatement ps = direct.prepareStatement(MASKED_QUERY); ResultSet rs = ps.executeQuery()) {
                directRows = rows(rs);
            }
            String param;
            try (PreparedStatement ps = proxy.prepareStatement("SELECT name, email FROM customers WHERE id = ?")) {
                ps.setInt(1, 2);
                try (ResultSet rs = ps.executeQuery()) {
                    param = rows(rs);
                }
            }
            String simpleRows;
            try (Statement st = simple.createStatement(); ResultSet rs = st.executeQuery(MASKED_QUERY)) {
                simpleRows = rows(rs);
            }
            emit("masked", "columns", proxyCols, "proxy", proxyRows, "repeated", "[" + String.join(",", repeated) + "]",
                    "direct", directRows, "param", param, "simple", simpleRows);
        });

        step("held", () -> {
            long started = System.nanoTime();
            try (PreparedStatement ps = proxy.prepareStatement("SELECT id, label FROM vault WHERE id <= ? ORDER BY id")) {
                ps.setInt(1, 2);
                try (ResultSet rs = ps.executeQuery()) {
                    String r = rows(rs);
                    emit("held", "rows", r, "warnings", warnings(ps.getWarnings()),
                            "waited_ms", String.valueOf((System.nanoTime() - started) / 1_000_000));
                }
            }
        });

        step("denied_by_reviewer", () -> denied("denied_by_reviewer", "DELETE FROM vault WHERE id = ?", 1, null));
        step("denied_by_rule", () -> denied("denied_by_rule", "SELECT pg_read_file(?)", 0, "/etc/hostname"));

        simple.close();
        proxy.close();
        direct.close();
        emit("end");
    }

    static Connection connect(String url, String app, boolean simpleMode) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", "postgres");
        p.setProperty("ApplicationName", app);
        if (simpleMode) p.setProperty("preferQueryMode", "simple");
        return DriverManager.getConnection(url, p);
    }

    static void denied(String name, String sql, int intParam, String textParam) throws SQLException {
        try (PreparedStatement ps = proxy.prepareStatement(sql)) {
            if (textParam != null) ps.setString(1, textParam);
            else ps.setInt(1, intParam);
            ps.execute();
            emit(name, "error", "null");
        } catch (PSQLException e) {
            ServerErrorMessage m = e.getServerErrorMessage();
            String after;
            try (Statement st = proxy.createStatement(); ResultSet rs = st.executeQuery("SELECT 'still usable'")) {
                rs.next();
                after = rs.getString(1);
            }
            emit(name, "error", obj("sqlstate", str(e.getSQLState()), "severity", str(m == null ? null : m.getSeverity()),
                    "message", str(m == null ? e.getMessage() : m.getMessage()), "detail", str(m == null ? null : m.getDetail())),
                    "after", str(after));
        }
    }

    interface Step {
        void run() throws Exception;
    }

    static void step(String name, Step s) {
        try {
            s.run();
        } catch (Exception e) {
            emit(name, "exception", str(e.toString()));
        }
    }

    static String columns(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        List<String> out = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) out.add(str(md.getColumnLabel(i)));
        return "[" + String.join(",", out) + "]";
    }

    static String rows(ResultSet rs) throws SQLException {
        int n = rs.getMetaData().getColumnCount();
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            List<String> row = new ArrayList<>();
            for (int i = 1; i <= n; i++) {
                Object v = rs.getObject(i);
                row.add("[" + str(v == null ? "null" : v.getClass().getSimpleName()) + "," + str(rs.getString(i)) + "]");
            }
            out.add("[" + String.join(",", row) + "]");
        }
        return "[" + String.join(",", out) + "]";
    }

    static String warnings(SQLWarning w) {
        List<String> out = new ArrayList<>();
        for (; w != null; w = w.getNextWarning()) out.add(str(w.getMessage()));
        return "[" + String.join(",", out) + "]";
    }

    /** A JSON object from key/raw-JSON pairs. */
    static String obj(String... kv) {
        StringBuilder b = new StringBuilder("{");
        for (int i = 0; i < kv.length; i += 2) {
            if (i > 0) b.append(',');
            b.append(str(kv[i])).append(':').append(kv[i + 1]);
        }
        return b.append('}').toString();
    }

    static void emit(String step, String... kv) {
        String[] all = new String[kv.length + 2];
        all[0] = "step";
        all[1] = str(step);
        System.arraycopy(kv, 0, all, 2, kv.length);
        OUT.println(obj(all));
    }

    static String str(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
            }
        }
        return b.append('"').toString();
    }
}
