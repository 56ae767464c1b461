// Applies SCRAM users and ACLs to the local broker through Kafka's own Admin client, in one
// JVM. Run by scripts/stack.py with the broker's jars (Java's single-file source launcher):
//
//   java -cp "jars/*" BallastKafkaAdmin.java <bootstrap> <admin.properties>  < commands
//
// One command a line (blank lines and # comments are skipped):
//   scram <user> <password>                                 add or update a SCRAM-SHA-512 user
//   ALLOW|DENY <principal> TOPIC|GROUP LITERAL|PREFIXED <name> <operation>   add an ACL
// Creating an ACL that exists already is a no-op, so a run can be repeated.

import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class BallastKafkaAdmin {
    static final int SCRAM_ITERATIONS = 8192;

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: BallastKafkaAdmin <bootstrap> <admin.properties> < commands");
            System.exit(2);
        }
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[1])) {
            props.load(in);
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.putIfAbsent(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "60000");

        List<UserScramCredentialAlteration> users = new ArrayList<>();
        List<AclBinding> acls = new ArrayList<>();
        BufferedReader reader =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        int lineNo = 0;
        for (String line = reader.readLine(); line != null; line = reader.readLine()) {
            lineNo++;
            String text = line.strip();
            if (text.isEmpty() || text.startsWith("#")) {
                continue;
            }
            String[] f = text.split("\\s+");
            try {
                if (f[0].equals("scram") && f.length == 3) {
                    users.add(new UserScramCredentialUpsertion(
                            f[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), f[2]));
                } else if ((f[0].equals("ALLOW") || f[0].equals("DENY")) && f.length == 6) {
                    ResourcePattern pattern = new ResourcePattern(
                            ResourceType.valueOf(f[2]), f[4], PatternType.valueOf(f[3]));
                    AccessControlEntry entry = new AccessControlEntry(
                            f[1], "*", AclOperation.valueOf(f[5]), AclPermissionType.valueOf(f[0]));
                    acls.add(new AclBinding(pattern, entry));
                } else {
                    throw new IllegalArgumentException("expected `scram USER PASSWORD` or "
                            + "`ALLOW|DENY PRINCIPAL TYPE PATTERN NAME OPERATION`");
                }
            } catch (IllegalArgumentException e) {
                System.err.println("line " + lineNo + ": " + e.getMessage());
                System.exit(2);
            }
        }
        try (Admin admin = Admin.create(props)) {
            if (!users.isEmpty()) {
                admin.alterUserScramCredentials(users).all().get(60, TimeUnit.SECONDS);
            }
            if (!acls.isEmpty()) {
                admin.createAcls(acls).all().get(60, TimeUnit.SECONDS);
            }
        }
        System.out.println("users " + users.size() + " acls " + acls.size());
    }
}
