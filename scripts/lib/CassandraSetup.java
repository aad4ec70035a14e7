// The CQL part of `scripts/cassandra up`, run as a single-file program on
// Cassandra's own runtime jars (the 3.x Java driver ships with them):
//
//   java -cp 'LIB/*' scripts/lib/CassandraSetup.java STATE_DIR
//
// Over TLS (the nodes' certificates checked against the script's CA), on
// the first run as the default superuser: system_auth gets the data's
// replication (NetworkTopologyStrategy {'DC0': 2, 'DC1': 2}, so logins
// survive a lost node) and a generated superuser strata_admin replaces
// `cassandra` (which loses LOGIN and SUPERUSER); then the `storage`
// keyspace and the roles strata_host and strata_maint (SELECT and MODIFY on
// it; scrub's deletes are MODIFY). Passwords are read from
// STATE_DIR/secrets/NAME (generated, mode 0600), never from arguments.
// Safe to run again.
import com.datastax.driver.core.*;
import com.datastax.driver.core.exceptions.AuthenticationException;
import java.io.FileInputStream;
import java.nio.file.*;
import java.security.KeyStore;
import java.security.cert.*;
import javax.net.ssl.*;
public class CassandraSetup {
  static String secret(Path d, String n) throws Exception { String v = Files.readString(d.resolve("secrets").resolve(n)).trim(); if (!v.matches("[A-Za-z0-9]{16,}")) throw new IllegalArgumentException("secret " + n + " is not a generated password"); return v; }
  static Cluster cluster(Path d, String u, String p) throws Exception {
    KeyStore ts = KeyStore.getInstance(KeyStore.getDefaultType()); ts.load(null, null);
    try (FileInputStream in = new FileInputStream(d.resolve("tls/ca.pem").toFile())) { ts.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(in)); }
    TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm()); tmf.init(ts);
    SSLContext ctx = SSLContext.getInstance("TLS"); ctx.init(null, tmf.getTrustManagers(), null);
    return Cluster.builder().addContactPoint("127.0.2.1").withPort(9042)
      .withSSL(RemoteEndpointAwareJdkSSLOptions.builder().withSSLContext(ctx).build())
      .withCredentials(u, p).withoutJMXReporting().withoutMetrics().build();
  }
  public static void main(String[] a) throws Exception {
    Path d = Path.of(a[0]);
    String admin = secret(d, "strata_cassandra_admin");
    Cluster c;
    c = cluster(d, "strata_admin", admin);
    try { c.connect().close(); }
    catch (AuthenticationException first) {
      c.close();
      System.err.println("first run: replacing the default superuser");
      try (Cluster dc = cluster(d, "cassandra", "cassandra"); Session s = dc.connect()) {
        s.execute("ALTER KEYSPACE system_auth WITH replication = {'class': 'NetworkTopologyStrategy', 'DC0': 2, 'DC1': 2}");
        s.execute("CREATE ROLE IF NOT EXISTS strata_admin WITH SUPERUSER = true AND LOGIN = true AND PASSWORD = '" + admin + "'");
      }
      c = cluster(d, "strata_admin", admin);
    }
    try (Session s = c.connect()) {
      String dcs = "{'class': 'NetworkTopologyStrategy', 'DC0': 2, 'DC1': 2}";
      s.execute("ALTER KEYSPACE system_auth WITH replication = " + dcs);
      s.execute("ALTER ROLE cassandra WITH SUPERUSER = false AND LOGIN = false");
      s.execute("CREATE KEYSPACE IF NOT EXISTS storage WITH replication = " + dcs);
      for (String r : new String[] {"strata_host", "strata_maint"}) {
        s.execute("CREATE ROLE IF NOT EXISTS " + r + " WITH LOGIN = true AND PASSWORD = '" + secret(d, r) + "'");
        s.execute("GRANT SELECT ON KEYSPACE storage TO " + r);
        s.execute("GRANT MODIFY ON KEYSPACE storage TO " + r);
      }
    }
    c.close();
    System.err.println("ready");
  }
}
