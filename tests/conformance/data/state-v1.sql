-- A state database made by corral before Alembic (schema_version 1, commit 84fab8c),
-- filled with tests.conformance.test_state_store.fill in environment 'hello/dev'.
BEGIN TRANSACTION;
CREATE TABLE agents (
	env TEXT NOT NULL, 
	agent_id TEXT NOT NULL, 
	host TEXT NOT NULL, 
	pid INTEGER NOT NULL, 
	home TEXT NOT NULL, 
	socket TEXT NOT NULL, 
	started_at DOUBLE NOT NULL, 
	heartbeat_at DOUBLE NOT NULL, 
	PRIMARY KEY (env)
);
INSERT INTO "agents" VALUES('hello/dev','ag-1','build-1',77,'/h','/s',1800000000.0,1800000000.0);
CREATE TABLE applies (
	env TEXT NOT NULL, 
	id TEXT NOT NULL, 
	status TEXT NOT NULL, 
	target TEXT NOT NULL, 
	holder TEXT NOT NULL, 
	created_at DOUBLE NOT NULL, 
	finished_at DOUBLE, 
	result TEXT NOT NULL, 
	PRIMARY KEY (env, id)
);
INSERT INTO "applies" VALUES('hello/dev','a-1','running','{}','{}',1800000000.0,NULL,'{}');
CREATE TABLE counters (
	env TEXT NOT NULL, 
	name TEXT NOT NULL, 
	value BIGINT NOT NULL, 
	PRIMARY KEY (env, name)
);
INSERT INTO "counters" VALUES('hello/dev','instance:web',2);
INSERT INTO "counters" VALUES('hello/dev','event',1);
INSERT INTO "counters" VALUES('hello/dev','journal',1);
CREATE TABLE events (
	env TEXT NOT NULL, 
	seq BIGINT NOT NULL, 
	ts DOUBLE NOT NULL, 
	kind TEXT NOT NULL, 
	message TEXT NOT NULL, 
	service TEXT, 
	actor TEXT, 
	data TEXT NOT NULL, 
	PRIMARY KEY (env, seq)
);
INSERT INTO "events" VALUES('hello/dev',1,1800000000.0,'apply.started','started',NULL,NULL,'{}');
CREATE TABLE instances (
	env TEXT NOT NULL, 
	id TEXT NOT NULL, 
	service TEXT NOT NULL, 
	serial INTEGER NOT NULL, 
	release INTEGER NOT NULL, 
	state TEXT NOT NULL, 
	address TEXT, 
	driver_ref TEXT, 
	created_at DOUBLE NOT NULL, 
	updated_at DOUBLE NOT NULL, 
	reason TEXT, 
	PRIMARY KEY (env, id), 
	FOREIGN KEY(env, service, release) REFERENCES releases (env, service, number)
);
INSERT INTO "instances" VALUES('hello/dev','web-1','web',1,1,'running',NULL,NULL,0.0,0.0,NULL);
CREATE TABLE journal (
	env TEXT NOT NULL, 
	seq BIGINT NOT NULL, 
	ts DOUBLE NOT NULL, 
	apply_id TEXT, 
	kind TEXT NOT NULL, 
	data TEXT NOT NULL, 
	status TEXT NOT NULL, 
	PRIMARY KEY (env, seq)
);
INSERT INTO "journal" VALUES('hello/dev',1,1800000000.0,NULL,'instance.start','{}','pending');
CREATE TABLE locks (
	env TEXT NOT NULL, 
	holder_id TEXT NOT NULL, 
	user TEXT NOT NULL, 
	host TEXT NOT NULL, 
	pid INTEGER NOT NULL, 
	command TEXT NOT NULL, 
	message TEXT NOT NULL, 
	operation TEXT NOT NULL, 
	since DOUBLE NOT NULL, 
	expires_at DOUBLE NOT NULL, 
	PRIMARY KEY (env)
);
INSERT INTO "locks" VALUES('hello/dev','h1','alice','build-1',4242,'corral apply','ship r2','apply',1800000000.0,1800000300.0);
CREATE TABLE releases (
	env TEXT NOT NULL, 
	service TEXT NOT NULL, 
	number INTEGER NOT NULL, 
	image_digest TEXT NOT NULL, 
	config_hash TEXT NOT NULL, 
	config TEXT NOT NULL, 
	created_at DOUBLE NOT NULL, 
	created_by TEXT NOT NULL, 
	PRIMARY KEY (env, service, number), 
	CONSTRAINT releases_key UNIQUE (env, service, image_digest, config_hash)
);
INSERT INTO "releases" VALUES('hello/dev','web',1,'sha256:a','sha256:x','{}',1800000000.0,'alice');
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	PRIMARY KEY (version)
);
INSERT INTO "schema_version" VALUES(1);
CREATE TABLE services (
	env TEXT NOT NULL, 
	name TEXT NOT NULL, 
	current_release INTEGER, 
	replicas INTEGER NOT NULL, 
	route_port INTEGER, 
	settings TEXT NOT NULL, 
	updated_at DOUBLE NOT NULL, 
	PRIMARY KEY (env, name), 
	FOREIGN KEY(env, name, current_release) REFERENCES releases (env, service, number)
);
INSERT INTO "services" VALUES('hello/dev','web',1,1,NULL,'{}',0.0);
CREATE INDEX events_by_service ON events (env, service, seq);
CREATE INDEX journal_by_status ON journal (env, status);
CREATE INDEX instances_by_service ON instances (env, service);
COMMIT;
